//! Set-up for agent-loop tests: a provider plugin pointed at a fake vendor, an agent, a
//! session, and a small SSE reader.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::components as c;
use crate::server::TestServer;
use crate::vendor::{FakeVendor, Flavor, Reply};
use crate::{manifest, pack};

/// What [`setup`] made.
pub struct Setup {
    pub admin: String,
    pub provider: String,
    pub agent_id: String,
    pub session_id: String,
}

/// The first-party provider plugin for a vendor: (instance id, manifest, wasm).
pub fn provider_plugin(flavor: Flavor) -> (&'static str, &'static str, &'static str) {
    match flavor {
        Flavor::OpenAi => ("openai", c::PLUGIN_OPENAI_MANIFEST, c::PLUGIN_OPENAI_WASM),
        Flavor::Anthropic => (
            "anthropic",
            c::PLUGIN_ANTHROPIC_MANIFEST,
            c::PLUGIN_ANTHROPIC_WASM,
        ),
        Flavor::Ollama => ("ollama", c::PLUGIN_OLLAMA_MANIFEST, c::PLUGIN_OLLAMA_WASM),
    }
}

/// Uploads a package as an admin.
pub async fn upload(s: &TestServer, token: &str, package: Vec<u8>) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(s.url("/api/plugins"))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(package)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Installs the vendor's provider plugin (with an API key where it takes one) and `calc`,
/// creates an agent on `model` with the calc tool, and a session.
pub async fn setup(s: &TestServer, vendor: &FakeVendor, model: &str) -> Setup {
    setup_with_provider(s, vendor, model, provider_plugin(vendor.flavor())).await
}

/// [`setup`] with another build of the vendor's provider plugin: (instance id, manifest
/// path, wasm path).
pub async fn setup_with_provider(
    s: &TestServer,
    vendor: &FakeVendor,
    model: &str,
    (provider, manifest_path, wasm): (&str, &str, &str),
) -> Setup {
    let admin = s.setup_admin().await;
    let (status, body) = upload(s, &admin, pack(&manifest(manifest_path), wasm)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut auth = json!({"base_url": vendor.base_url()});
    if vendor.flavor() != Flavor::Ollama {
        auth["api_key"] = json!("sk-test-secret");
    }
    let (status, body) = s
        .send(
            "PUT",
            &format!("/api/providers/{provider}/auth"),
            Some(&admin),
            Some(auth),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = upload(
        s,
        &admin,
        pack(&manifest(c::PLUGIN_CALC_MANIFEST), c::PLUGIN_CALC_WASM),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, agent) = s
        .send(
            "POST",
            "/api/agents",
            Some(&admin),
            Some(json!({
                "name": "helper",
                "instructions": "You are a helpful assistant.",
                "provider": {"plugin": provider, "model": model, "max_tokens": 100},
                "tools": ["calc/calc"],
                "max_steps": 5,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let session_id = new_session(s, &admin, &agent_id).await;
    Setup {
        admin,
        provider: provider.to_owned(),
        agent_id,
        session_id,
    }
}

pub async fn new_session(s: &TestServer, token: &str, agent_id: &str) -> String {
    let (status, session) = s
        .send(
            "POST",
            "/api/sessions",
            Some(token),
            Some(json!({"title": "test", "agent_id": agent_id})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    session["id"].as_str().unwrap().to_owned()
}

/// Sends a message and waits for the run's result (`?wait=true`).
pub async fn ask_and_wait(
    s: &TestServer,
    token: &str,
    session: &str,
    text: &str,
) -> (StatusCode, Value) {
    let path = format!("/api/sessions/{session}/messages?wait=true");
    let fut = s.send("POST", &path, Some(token), Some(json!({"text": text})));
    tokio::time::timeout(std::time::Duration::from_secs(60), fut)
        .await
        .expect("the run ended within 60 s (no hang)")
}

/// Starts a run whose one provider call answers slowly (`text`'s words one per `delay_ms`),
/// on `session` of `host`, and returns once the call reached the vendor (its budget
/// reservation taken). Returns the run's id.
pub async fn start_slow_call(
    host: &TestServer,
    token: &str,
    session: &str,
    vendor: &FakeVendor,
    delay_ms: u64,
) -> String {
    start_slow_run(
        host,
        token,
        session,
        vendor,
        "a slow and costly answer",
        delay_ms,
    )
    .await
}

/// [`start_slow_call`] with a text of the caller's.
pub async fn start_slow_run(
    host: &TestServer,
    token: &str,
    session: &str,
    vendor: &FakeVendor,
    text: &str,
    delay_ms: u64,
) -> String {
    let before = vendor.request_count();
    vendor.push(Reply::Slow {
        text: text.into(),
        delay: std::time::Duration::from_millis(delay_ms),
    });
    let (status, body) = host
        .send(
            "POST",
            &format!("/api/sessions/{session}/messages"),
            Some(token),
            Some(json!({"text": "first"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    eventually("the slow call reached the vendor", || async {
        vendor.request_count() > before
    })
    .await;
    body["run_id"].as_str().unwrap().to_owned()
}

/// Waits until `check` holds, polling; panics naming `what` after 20 s. For state that
/// settles after a response was sent (a run's end, a freed slot): the bound catches a hang,
/// it does not time anything.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 20 s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// Reads an SSE response incrementally.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> SseReader {
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (comments skipped); `None` at the end of the stream. Panics after 60 s
    /// (keep-alive comments do not count: they would keep a stream without events going).
    pub async fn next(&mut self) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut data = String::new();
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if !any {
                    continue;
                }
                event.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("an SSE event within 60 s")
                .expect("SSE body");
            match chunk {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// Events up to and including the first `finish` or `error`.
    pub async fn until_end(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            let end = e.event == "finish" || e.event == "error";
            out.push(e);
            if end {
                break;
            }
        }
        out
    }
}

/// Opens a session's event stream, optionally resuming after `last_event_id`.
pub async fn events(
    s: &TestServer,
    token: &str,
    session: &str,
    last_event_id: Option<&str>,
) -> SseReader {
    let mut req = s
        .http
        .get(s.url(&format!("/api/sessions/{session}/events")))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    SseReader::new(resp)
}
