//! `kelp chat`: a conversation with an agent from the terminal, through the server's HTTP API.
//! Each line read is one turn (`POST /api/ask`); the reply streams back as server-sent events.
//! On a terminal it is printed as it arrives, tool calls and their results on lines of their
//! own. When standard output is not a terminal it carries only each final answer — what a
//! script reads — and the rest goes to stderr; `--json` prints every event instead. Ctrl-C
//! during a reply aborts the run; at the prompt, Ctrl-C or end of input quits.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::client::{Refusal, Server, segment};

/// Longest tool call or result shown, in characters. The agent always gets the whole result;
/// this only keeps a big page or file from burying the conversation.
const PREVIEW_CHARS: usize = 200;

#[derive(clap::Args)]
pub struct ChatArgs {
    /// Agent to talk to, by name (default: your default agent, or your only one).
    #[arg(long, value_name = "NAME", conflicts_with = "session")]
    agent: Option<String>,
    /// Continue this session instead of starting a new one.
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Print every event of each run as one line of JSON (`{"event", "data"}`) on stdout.
    #[arg(long)]
    json: bool,
}

pub async fn chat(args: ChatArgs, server: Server) -> anyhow::Result<ExitCode> {
    // Checked before the first question, so a typo costs nothing typed.
    if let Some(agent) = &args.agent {
        let agents = agents(&server).await?;
        if !agents.iter().any(|a| a == agent) {
            bail!(no_such_agent(agent, &agents));
        }
    }

    let interactive = std::io::stdin().is_terminal();
    let output = if args.json {
        Output::Json
    } else if std::io::stdout().is_terminal() {
        Output::Stream
    } else {
        Output::AnswerOnly
    };
    let mut chat = Chat {
        server,
        session: args.session,
        agent: args.agent,
        style: Style::detect(),
        output,
        failed: false,
    };
    let mut lines = read_lines();
    let mut interrupts = interrupts();
    if interactive {
        eprintln!(
            "{}",
            chat.style
                .dim_err("Ctrl-C stops a reply; Ctrl-D, Ctrl-C or /exit quits.")
        );
    }
    loop {
        if interactive {
            eprint!("{}", chat.style.prompt());
        }
        let line = tokio::select! {
            line = lines.recv() => line,
            Some(()) = interrupts.recv() => None,
        };
        let Some(line) = line else {
            if interactive {
                eprintln!();
            }
            break;
        };
        let line = line.context("reading standard input")?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if matches!(text, "/exit" | "/quit") {
            break;
        }
        chat.turn(text, &mut interrupts).await?;
    }
    Ok(if chat.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Lines of standard input. Read on a plain thread: a read of a terminal can block forever,
/// and a `spawn_blocking` task would keep the runtime from shutting down when the user quits
/// with Ctrl-C.
fn read_lines() -> mpsc::Receiver<std::io::Result<String>> {
    // One line of look-ahead: a pipe is read as fast as the turns go, not buffered whole.
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Every Ctrl-C, queued. One listener for the whole session, so a Ctrl-C pressed while no
/// `select!` is waiting (between two reads of the stream) is not lost.
fn interrupts() -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    rx
}

/// The names of the user's agents.
async fn agents(server: &Server) -> anyhow::Result<Vec<String>> {
    let body = server.call(Method::GET, "/v1/models", None).await?;
    Ok(body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect())
}

fn no_such_agent(wanted: &str, agents: &[String]) -> String {
    if agents.is_empty() {
        format!(
            "no agent named `{wanted}`: you have no agents yet (create one with `kelp agent add`)"
        )
    } else {
        format!(
            "no agent named `{wanted}`; your agents: {} (pick one with --agent NAME)",
            agents.join(", ")
        )
    }
}

/// One conversation: the session is set by the first turn and reused by the next ones.
struct Chat {
    server: Server,
    session: Option<String>,
    agent: Option<String>,
    style: Style,
    output: Output,
    /// A turn failed; a script piping questions in learns it from the exit status.
    failed: bool,
}

/// What goes to standard output.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    /// A terminal: the reply as it streams, tool calls and results between.
    Stream,
    /// A pipe or file: each run's final answer only, so `kelp chat > out` holds the answers;
    /// text written before a tool call, the calls and their results go to stderr.
    AnswerOnly,
    /// Every event, one JSON line each.
    Json,
}

impl Chat {
    /// Asks `text` and prints the reply as it streams. Errors only for what ends the chat
    /// (server unreachable, token refused, agent or session gone); a turn that fails
    /// otherwise is reported and the prompt comes back.
    async fn turn(
        &mut self,
        text: &str,
        interrupts: &mut mpsc::UnboundedReceiver<()>,
    ) -> anyhow::Result<()> {
        let mut body = json!({"text": text});
        if let Some(session) = &self.session {
            body["session_id"] = json!(session);
        } else if let Some(agent) = &self.agent {
            body["agent"] = json!(agent);
        }
        // Ctrl-C pressed before the reply starts still aborts: the run may already have
        // started on the server, and the session id is only known once the answer comes.
        let mut interrupted = 0;
        let send = self
            .server
            .request(Method::POST, "/api/ask")
            .json(&body)
            .send();
        tokio::pin!(send);
        let response = loop {
            tokio::select! {
                r = &mut send => break r.map_err(|e| self.server.unreachable(e))?,
                Some(()) = interrupts.recv() => interrupted += 1,
            }
        };
        if !response.status().is_success() {
            return self.refusal(Refusal::read(response).await).await;
        }
        if let Some(id) = response
            .headers()
            .get("x-kelp-session-id")
            .and_then(|v| v.to_str().ok())
            && self.session.as_deref() != Some(id)
        {
            // Shown once, so the conversation can be continued or looked up later.
            eprintln!(
                "{}",
                self.style
                    .dim_err(&format!("session {id} (continue it with --session {id})"))
            );
            self.session = Some(id.to_owned());
        }
        if interrupted > 0 {
            self.abort().await;
        }

        let mut render = Render::new(self.style, self.output);
        let mut parser = SseParser::default();
        let mut stream = response.bytes_stream();
        loop {
            while let Some(event) = parser.next_event() {
                if let Some(ok) = render.event(&event) {
                    self.failed |= !ok;
                    return Ok(());
                }
            }
            let chunk = tokio::select! {
                chunk = stream.next() => chunk,
                Some(()) = interrupts.recv() => {
                    interrupted += 1;
                    render.end_line();
                    if interrupted == 1 {
                        self.abort().await;
                        continue;
                    }
                    // A second Ctrl-C: the user will not wait for the run to wind down.
                    render.abandon();
                    eprintln!("{}", self.style.dim_err("stopped waiting for the run"));
                    return Ok(());
                }
            };
            match chunk {
                Some(Ok(bytes)) => parser.push(&bytes),
                Some(Err(e)) => return self.broken(&mut render, &e.to_string()),
                None => return self.broken(&mut render, "the server closed the stream"),
            }
        }
    }

    /// Asks the server to stop the session's run; the stream then ends with `finish`.
    async fn abort(&self) {
        let Some(session) = &self.session else {
            return;
        };
        let path = format!("/api/sessions/{}/abort", segment(session));
        match self.server.request(Method::POST, &path).send().await {
            Ok(r) if r.status().is_success() => {
                eprintln!("{}", self.style.dim_err("aborting the run…"));
            }
            // 409: the run ended on its own in the meantime; its finish is on the way.
            Ok(r) if r.status() == StatusCode::CONFLICT => {}
            Ok(r) => eprintln!("error: abort: {}", Refusal::read(r).await),
            Err(e) => eprintln!("error: abort: {e}"),
        }
    }

    fn broken(&mut self, render: &mut Render, why: &str) -> anyhow::Result<()> {
        render.abandon();
        eprintln!("error: the reply broke off before the run finished: {why}");
        self.failed = true;
        Ok(())
    }

    async fn refusal(&mut self, r: Refusal) -> anyhow::Result<()> {
        let named = self.session.is_some() || self.agent.is_some();
        match r.status {
            StatusCode::UNAUTHORIZED => bail!(r),
            StatusCode::NOT_FOUND if self.session.is_none() && self.agent.is_some() => {
                // Deleted since the check at start.
                let agent = self.agent.as_deref().unwrap_or_default();
                bail!(no_such_agent(agent, &agents(&self.server).await?))
            }
            StatusCode::NOT_FOUND => bail!(r),
            // The server could not choose an agent: every further line would fail the same
            // way, so end here, naming the choices.
            StatusCode::BAD_REQUEST if !named => {
                let agents = agents(&self.server).await?;
                if agents.len() > 1 {
                    bail!(
                        "you have several agents: {}; pick one with --agent NAME (or set \
                         default_agent_id in your settings)",
                        agents.join(", ")
                    );
                }
                self.turn_failed(&r);
                Ok(())
            }
            _ => {
                self.turn_failed(&r);
                Ok(())
            }
        }
    }

    /// Reports a refused turn; the prompt comes back for the next one.
    fn turn_failed(&mut self, r: &Refusal) {
        let code = if r.code.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.code)
        };
        eprintln!("error: {}{code}", r.message);
        self.failed = true;
    }
}

/// Whether to colour: only terminals, and only without `NO_COLOR` (https://no-color.org).
#[derive(Clone, Copy)]
struct Style {
    stdout: bool,
    stderr: bool,
}

impl Style {
    fn detect() -> Style {
        let allowed = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Style {
            stdout: allowed && std::io::stdout().is_terminal(),
            stderr: allowed && std::io::stderr().is_terminal(),
        }
    }

    fn dim(on: bool, s: &str) -> String {
        if on {
            format!("\x1b[2m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    fn dim_out(&self, s: &str) -> String {
        Style::dim(self.stdout, s)
    }

    fn dim_err(&self, s: &str) -> String {
        Style::dim(self.stderr, s)
    }

    fn prompt(&self) -> String {
        if self.stderr {
            "\x1b[1m›\x1b[0m ".to_owned()
        } else {
            "› ".to_owned()
        }
    }
}

/// Prints a run's events: as a person reads them, or as a script does (see [`Output`]).
struct Render {
    style: Style,
    output: Output,
    /// Whether stdout's cursor is at the start of a line, so tool lines and the summary
    /// never start in the middle of the streamed text.
    at_line_start: bool,
    /// [`Output::AnswerOnly`]: text of the current step, held until it is known to be the
    /// answer (the run finishes) or not (a tool call follows).
    held: String,
}

impl Render {
    fn new(style: Style, output: Output) -> Render {
        Render {
            style,
            output,
            at_line_start: true,
            held: String::new(),
        }
    }

    /// Ends the streamed line, so what follows starts on a line of its own.
    fn end_line(&mut self) {
        if self.output == Output::Stream && !self.at_line_start {
            println!();
            self.at_line_start = true;
        }
    }

    /// The run will not be followed to its end (the stream broke, or the user stopped
    /// waiting): text held back goes to stderr, as it is not a finished answer.
    fn abandon(&mut self) {
        self.end_line();
        self.release_to_stderr();
    }

    fn release_to_stderr(&mut self) {
        if !self.held.is_empty() {
            eprintln!("{}", self.held.trim_end_matches('\n'));
            self.held.clear();
        }
    }

    /// A line about the run (a tool call or result): beside the answer on a terminal,
    /// away from it otherwise.
    fn note(&mut self, line: &str) {
        if self.output == Output::Stream {
            self.end_line();
            println!("{}", self.style.dim_out(line));
        } else {
            self.release_to_stderr();
            eprintln!("{}", self.style.dim_err(line));
        }
    }

    /// Prints one event; `Some(success)` once the run has ended.
    fn event(&mut self, event: &SseEvent) -> Option<bool> {
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        if self.output == Output::Json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", json!({"event": event.event, "data": data}));
            let _ = out.flush();
            return match event.event.as_str() {
                "finish" => Some(true),
                "error" => Some(false),
                _ => None,
            };
        }
        let text = |key: &str| data[key].as_str().unwrap_or_default();
        match event.event.as_str() {
            "text-delta" => {
                let delta = text("text");
                if self.output == Output::AnswerOnly {
                    self.held.push_str(delta);
                } else if !delta.is_empty() {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(delta.as_bytes());
                    // Deltas are a few words each; without a flush they would sit in the
                    // buffer until a newline.
                    let _ = out.flush();
                    self.at_line_start = delta.ends_with('\n');
                }
            }
            "tool-call" => {
                let arguments = text("arguments");
                // Compact JSON keeps a call on one line; arguments that are not JSON (a model
                // can send anything) are shown as sent.
                let arguments = serde_json::from_str::<Value>(arguments)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|_| arguments.to_owned());
                // Not dimmed on a terminal: the call is what the agent decided to do.
                let line = format!("⚙ {} {}", text("name"), preview(&arguments));
                if self.output == Output::Stream {
                    self.end_line();
                    println!("{line}");
                } else {
                    self.release_to_stderr();
                    eprintln!("{line}");
                }
            }
            "tool-result" => {
                let content = preview(text("content"));
                let line = if data["is_error"].as_bool() == Some(true) {
                    format!("  → error: {content}")
                } else {
                    format!("  → {content}")
                };
                self.note(&line);
            }
            "finish" => {
                self.end_line();
                if !self.held.is_empty() {
                    let answer = std::mem::take(&mut self.held);
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{}", answer.trim_end_matches('\n'));
                    let _ = out.flush();
                }
                eprintln!("{}", self.style.dim_err(&summary(&data)));
                return Some(true);
            }
            "error" => {
                self.abandon();
                let code = text("code");
                let code = if code.is_empty() {
                    String::new()
                } else {
                    format!(" ({code})")
                };
                eprintln!("error: {}{code}", text("message"));
                return Some(false);
            }
            // run-start, step-finish: nothing a reader needs.
            _ => {}
        }
        None
    }
}

/// `[completed · 2 steps · 120 in / 14 out tokens · $0.0003]`
fn summary(finish: &Value) -> String {
    let status = match finish["status"].as_str().unwrap_or("completed") {
        "max_steps" => "stopped at the agent's step limit",
        other => other,
    };
    let steps = finish["steps"].as_u64().unwrap_or(0);
    let usage = &finish["usage"];
    let input = usage["input_tokens"].as_u64().unwrap_or(0);
    let output = usage["output_tokens"].as_u64().unwrap_or(0);
    // Money is a decimal string in the API (exact); shown rounded here.
    let cost = match &finish["cost_usd"] {
        Value::String(s) => s.parse::<f64>().unwrap_or(0.0),
        other => other.as_f64().unwrap_or(0.0),
    };
    let cost = if cost == 0.0 || cost >= 0.0001 {
        format!("${cost:.4}")
    } else {
        "<$0.0001".to_owned()
    };
    let plural = if steps == 1 { "" } else { "s" };
    format!("[{status} · {steps} step{plural} · {input} in / {output} out tokens · {cost}]")
}

/// `s` on one line, cut to [`PREVIEW_CHARS`].
fn preview(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = one_line.chars();
    let mut out: String = chars.by_ref().take(PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// One server-sent event.
#[derive(Debug, PartialEq)]
struct SseEvent {
    event: String,
    data: String,
}

/// Splits a server-sent event stream into events. Bytes are kept until an event is complete,
/// so a character split across two network chunks is decoded whole.
#[derive(Default)]
struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) {
        // The format allows CRLF line ends. Dropping every CR is safe here: the data is JSON,
        // where a CR only ever appears escaped.
        self.buf.extend(bytes.iter().filter(|&&b| b != b'\r'));
    }

    /// The next complete event; comments (keep-alives) and events without data are skipped.
    fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let mut event = String::from("message");
            let mut data: Option<String> = None;
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = value.to_owned(),
                    "data" => match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(value);
                        }
                        None => data = Some(value.to_owned()),
                    },
                    // `id`, `retry` and comments (an empty field name) change nothing here:
                    // one turn is one request, never resumed.
                    _ => {}
                }
            }
            if let Some(data) = data {
                return Some(SseEvent { event, data });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_reads_money_as_the_api_sends_it() {
        let finish = serde_json::json!({"status": "completed", "steps": 2, "cost_usd": "0.012345"});
        assert!(summary(&finish).contains("$0.0123"), "{}", summary(&finish));
        let free = serde_json::json!({"cost_usd": "0"});
        assert!(summary(&free).contains("$0.0000"), "{}", summary(&free));
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = ": keep-alive\n\nid: 1\nevent: text-delta\ndata: {\"text\":\"héllo ⚙\"}\n\n\
                      id: 2\r\nevent: finish\r\ndata: {\"a\":1}\r\ndata: 2\r\n\r\n";
        let bytes = stream.as_bytes();
        for cut in 0..bytes.len() {
            let mut parser = SseParser::default();
            let mut events = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                parser.push(part);
                while let Some(e) = parser.next_event() {
                    events.push(e);
                }
            }
            assert_eq!(
                events,
                [
                    SseEvent {
                        event: "text-delta".into(),
                        data: "{\"text\":\"héllo ⚙\"}".into()
                    },
                    SseEvent {
                        event: "finish".into(),
                        data: "{\"a\":1}\n2".into()
                    },
                ],
                "cut at byte {cut}"
            );
        }
    }

    #[test]
    fn previews_are_one_line_and_cut() {
        assert_eq!(preview("a\n  b"), "a b");
        let long = "x".repeat(PREVIEW_CHARS + 5);
        let shown = preview(&long);
        assert_eq!(shown.chars().count(), PREVIEW_CHARS + 1);
        assert!(shown.ends_with('…'));
    }
}
