//! `kelp chat` as a user runs it: the real binary against a real `kelp serve`, questions piped
//! on standard input, the model a fake OpenAI vendor. The server is set up as a new user does
//! it: the first-party plugins built into `kelp`, then `kelp login`, `kelp provider set` and
//! `kelp agent add`.

use std::process::{Output, Stdio};
use std::time::Duration;

use kelp_tests::process::{CliUser, KelpProcess};
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server with its built-in plugins, the openai provider pointed at a fake vendor, and an
/// agent `helper` that may use `calc`.
struct Served {
    vendor: FakeVendor,
    server: KelpProcess,
    user: CliUser,
    token: String,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Served {
    async fn start() -> Served {
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let data = tempfile::tempdir().unwrap();
        let server = KelpProcess::start(env!("CARGO_BIN_EXE_kelp"), data.path(), &[], &[]);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut s = Served {
            vendor,
            server,
            user: CliUser::new(env!("CARGO_BIN_EXE_kelp")),
            token: String::new(),
            http,
            _data: data,
        };
        let (status, setup) = s
            .send(
                "POST",
                "/api/auth/setup",
                Some(json!({"username": "admin", "password": "correct horse"})),
            )
            .await;
        assert_eq!(status, 201, "{setup}");
        s.token = setup["token"].as_str().unwrap().to_owned();
        s.user.login(&s.server.base, "admin", "correct horse");
        let providers = s.user.ok(&["provider", "list"]);
        assert!(
            providers.contains("openai (kelp/openai) — needs a key"),
            "{providers}"
        );
        let set = s.user.run_with(
            &[
                "provider",
                "set",
                "openai",
                "--base-url",
                &s.vendor.base_url(),
                "--api-key",
            ],
            &[],
            "sk-x\n",
        );
        assert!(set.success, "{set}");
        assert!(set.stdout.contains("openai: configured"), "{set}");
        let made = s.user.ok(&[
            "agent",
            "add",
            "helper",
            "--provider",
            "openai",
            "--model",
            "gpt-4o",
            "--tool",
            "calc/calc",
            "--instructions",
            "You are a helpful assistant.",
        ]);
        assert!(made.contains("created agent helper"), "{made}");
        s
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.server.base),
            )
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn agent(&self, name: &str) {
        let (status, body) = self
            .send(
                "POST",
                "/api/agents",
                Some(json!({
                    "name": name,
                    "instructions": "You are a helpful assistant.",
                    "provider": {"plugin": "openai", "model": "gpt-4o"},
                    "tools": ["calc/calc"],
                })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// `kelp chat ARGS` against this server, as the signed-in user.
    fn chat(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::from(self.user.command(&["chat"], &[]));
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `kelp chat` with `input` piped in and standard input closed after it.
    async fn chat_with(&self, args: &[&str], input: &str) -> Output {
        let mut child = self.chat(args).spawn().expect("running kelp chat");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
        drop(stdin);
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kelp chat ended within 60 s (no hang)")
            .unwrap()
    }

    /// The bodies of the chat requests the vendor received, in order.
    fn chat_requests(&self) -> Vec<Value> {
        self.vendor
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .map(|r| r.body)
            .collect()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn report(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_chat_puts_only_the_answer_on_stdout() {
    let s = Served::start().await;
    s.vendor.push(Reply::ToolCalls {
        text: Some("Let me work that out.".into()),
        calls: vec![("calc".into(), r#"{"expression":"6 * 7"}"#.into())],
    });
    s.vendor.push(Reply::text("It is 42."));

    // `echo 'What is 6*7?' | kelp chat --agent helper > out`
    let out = s.chat_with(&["--agent", "helper"], "What is 6*7?\n").await;
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(text(&out.stdout), "It is 42.\n", "{}", report(&out));
    // The rest, in order, for the person watching: the text before the call, the call, its
    // result, the summary, and the session to continue.
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let session = lines
        .iter()
        .find_map(|l| l.strip_prefix("session "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no session line\n{}", report(&out)));
    assert!(
        stderr.contains(&format!("(continue it with --session {session})")),
        "{stderr}"
    );
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}`\n{}", report(&out)))
    };
    assert!(at("Let me work that out.") < at(r#"⚙ calc {"expression":"6 * 7"}"#));
    assert!(at(r#"⚙ calc {"expression":"6 * 7"}"#) < at("  → "));
    assert!(lines[at("  → ")].contains("42") && !lines[at("  → ")].contains("error"));
    assert!(at("  → ") < at("completed · 2 steps"));
    assert!(!stderr.contains("\x1b["), "no colour when not a terminal");

    // The session shown is the one the conversation is in.
    let (status, messages) = s
        .send("GET", &format!("/api/sessions/{session}/messages"), None)
        .await;
    assert_eq!(status, 200, "{messages}");
    assert!(messages.to_string().contains("What is 6*7?"), "{messages}");

    // The run really went through the agent: the vendor got the tool's result back.
    let requests = s.chat_requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1]["messages"].to_string().contains("42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_prints_one_event_per_line() {
    let s = Served::start().await;
    s.vendor
        .push(Reply::tool_call("calc", r#"{"expression":"6 * 7"}"#));
    s.vendor.push(Reply::text("It is 42."));

    let out = s
        .chat_with(&["--agent", "helper", "--json"], "What is 6*7?\n")
        .await;
    assert!(out.status.success(), "{}", report(&out));
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"run-start"), "{names:?}");
    assert_eq!(names.last(), Some(&"finish"), "{names:?}");
    for name in ["tool-call", "tool-result", "text-delta"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let answer: String = events
        .iter()
        .filter(|e| e["event"] == "text-delta")
        .map(|e| e["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(answer, "It is 42.");
    assert_eq!(events.last().unwrap()["data"]["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_of_input_continue_one_session() {
    let s = Served::start().await;
    s.vendor.push(Reply::text("It is 42."));
    s.vendor.push(Reply::text("Doubled, 84."));

    let out = s
        .chat_with(&["--agent", "helper"], "What is 6*7?\n\nAnd doubled?\n")
        .await;
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(text(&out.stdout), "It is 42.\nDoubled, 84.\n");

    let requests = s.chat_requests();
    assert_eq!(requests.len(), 2, "the blank line asked nothing");
    let second = requests[1]["messages"].to_string();
    assert!(second.contains("What is 6*7?"), "{second}");
    assert!(second.contains("It is 42."), "{second}");
    assert!(second.contains("And doubled?"), "{second}");
    let (status, sessions) = s.send("GET", "/api/sessions", None).await;
    assert_eq!(status, 200, "{sessions}");
    assert_eq!(sessions["total"], 1, "{sessions}");

    // `--session` continues it from another invocation.
    let id = sessions["items"][0]["id"].as_str().unwrap().to_owned();
    s.vendor.push(Reply::text("Still 84."));
    let out = s.chat_with(&["--session", &id], "Sure?\n").await;
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(text(&out.stdout), "Still 84.\n");
    assert!(!text(&out.stderr).contains("session "), "{}", report(&out));
    let third = s.chat_requests()[2]["messages"].to_string();
    assert!(third.contains("And doubled?"), "{third}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_agent_is_refused_with_the_names_of_the_real_ones() {
    let s = Served::start().await;
    s.agent("writer").await;

    let out = s.chat_with(&["--agent", "nosuch"], "What is 6*7?\n").await;
    assert!(!out.status.success(), "{}", report(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no agent named `nosuch`"), "{stderr}");
    assert!(stderr.contains("helper, writer"), "{stderr}");
    assert_eq!(text(&out.stdout), "");
    assert_eq!(s.vendor.request_count(), 0, "nothing was asked");

    // Without --agent the server cannot choose between two; the chat ends naming them, and
    // the exit status says so.
    let out = s.chat_with(&[], "Hello?\nAnd now?\n").await;
    assert!(!out.status.success(), "{}", report(&out));
    assert!(
        text(&out.stderr)
            .contains("you have several agents: helper, writer; pick one with --agent NAME"),
        "{}",
        report(&out)
    );
    assert_eq!(s.vendor.request_count(), 0, "nothing was asked");

    // Another server than the one signed in to, without a token for it.
    let mut elsewhere = s.chat(&["--url", "http://127.0.0.1:9"]);
    let out = elsewhere.output().await.unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not signed in to http://127.0.0.1:9"),
        "{}",
        report(&out)
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_reply_aborts_the_run_and_chat_goes_on() {
    let s = Served::start().await;
    s.vendor.push(Reply::Slow {
        text: "one two three four five six seven eight nine ten".into(),
        delay: Duration::from_secs(2),
    });
    s.vendor.push(Reply::text("Next answer."));

    let mut child = s
        .chat(&["--agent", "helper"])
        .spawn()
        .expect("running kelp chat");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Count slowly.\n").await.unwrap();
    // Piped, the answer waits for the run's end; the session line on stderr says the run
    // has started.
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("session ") {
        let mut line = String::new();
        let n = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::io::AsyncBufReadExt::read_line(&mut stderr, &mut line),
        )
        .await
        .expect("the run started within 60 s")
        .unwrap();
        assert!(n > 0, "kelp chat ended before the run started: {seen}");
        seen.push_str(&line);
    }

    // What the terminal sends on Ctrl-C.
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    // The chat is still there for the next question.
    stdin.write_all(b"And now?\n").await.unwrap();
    drop(stdin);

    let mut rest = String::new();
    stderr.read_to_string(&mut rest).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kelp chat ended within 60 s (no hang)")
        .unwrap();
    let stdout = text(&out.stdout);
    let stderr = seen + &rest;
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("aborted"), "{stderr}");
    assert!(!stdout.contains("ten"), "the run stopped: {stdout}");
    assert!(stdout.ends_with("Next answer.\n"), "{stdout}");
}
