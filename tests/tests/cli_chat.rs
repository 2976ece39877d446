//! `kelp chat` as a user runs it: the real binary against a real `kelp serve`, questions piped
//! on standard input, the model a fake OpenAI vendor.

use std::process::{Output, Stdio};
use std::time::Duration;

use kelp_tests::process::KelpProcess;
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use kelp_tests::{components as c, manifest, pack};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server with the openai provider pointed at a fake vendor, `calc`, and an agent `helper`.
struct Served {
    vendor: FakeVendor,
    server: KelpProcess,
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
        s.upload(pack(
            &manifest(c::PLUGIN_OPENAI_MANIFEST),
            c::PLUGIN_OPENAI_WASM,
        ))
        .await;
        s.upload(pack(
            &manifest(c::PLUGIN_CALC_MANIFEST),
            c::PLUGIN_CALC_WASM,
        ))
        .await;
        let auth = json!({"base_url": s.vendor.base_url(), "api_key": "sk-x"});
        let (status, body) = s
            .send("PUT", "/api/providers/openai/auth", Some(auth))
            .await;
        assert_eq!(status, 200, "{body}");
        s.agent("helper").await;
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

    async fn upload(&self, package: Vec<u8>) {
        let response = self
            .http
            .post(format!("{}/api/plugins", self.server.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(package)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "{body}");
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

    /// `kelp chat ARGS` against this server, the token in `KELP_TOKEN`.
    fn chat(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kelp"));
        command
            .arg("chat")
            .args(args)
            .args(["--url", &self.server.base])
            .env("KELP_TOKEN", &self.token)
            .env_remove("KELP_URL")
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
async fn chat_streams_the_answer_and_shows_tool_calls() {
    let s = Served::start().await;
    s.vendor
        .push(Reply::tool_call("calc", r#"{"expression":"6 * 7"}"#));
    s.vendor.push(Reply::text("It is 42."));

    let out = s
        .chat_with(
            &["--agent", "helper", "--token", &s.token],
            "What is 6*7?\n",
        )
        .await;
    assert!(out.status.success(), "{}", report(&out));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // Piped: no prompt, just the conversation — the call, its result, then the answer.
    assert_eq!(lines.len(), 3, "{}", report(&out));
    assert_eq!(lines[0], r#"⚙ calc {"expression":"6 * 7"}"#);
    assert!(lines[1].starts_with("  → "), "{}", report(&out));
    assert!(lines[1].contains("42"), "{}", report(&out));
    assert!(!lines[1].contains("error"), "{}", report(&out));
    assert_eq!(lines[2], "It is 42.");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("completed · 2 steps"), "{}", report(&out));
    assert!(!stderr.contains("\x1b["), "no colour when not a terminal");

    // The run really went through the agent: the vendor got the tool's result back.
    let requests = s.chat_requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1]["messages"].to_string().contains("42"));
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

    // Without --agent the server cannot choose between two; the turn fails, and the exit
    // status says so.
    let out = s.chat_with(&[], "Hello?\n").await;
    assert!(!out.status.success(), "{}", report(&out));
    assert!(
        text(&out.stderr).contains("several agents"),
        "{}",
        report(&out)
    );

    let mut missing = s.chat(&[]);
    missing.env_remove("KELP_TOKEN");
    let out = missing.output().await.unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("KELP_TOKEN"), "{}", report(&out));
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
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(60), stdout.read(&mut first))
        .await
        .expect("the reply started within 60 s")
        .unwrap();
    assert!(n > 0, "the reply started");

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

    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kelp chat ended within 60 s (no hang)")
        .unwrap();
    let mut all = first[..n].to_vec();
    all.extend(rest);
    let stdout = text(&all);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("aborted"), "{stderr}");
    assert!(!stdout.contains("ten"), "the run stopped: {stdout}");
    assert!(stdout.ends_with("Next answer.\n"), "{stdout}");
}
