//! Fake LLM vendors on a loopback port: OpenAI Chat Completions, Anthropic Messages and
//! Ollama's native chat API, for the suite and the benchmarks of LLM plugins.
//!
//! A fake answers in the vendor's real wire format — streams, non-streamed JSON, error bodies
//! and headers — so a client that works against it works against the vendor. It is faithful
//! to the vendors (see `tests/fixtures/README.md`), never to a particular client.
//!
//! ```ignore
//! let vendor = FakeVendor::start(Flavor::Anthropic).await;
//! vendor.push(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));
//! vendor.push(Reply::rate_limited(3));
//! // ... point the plugin at vendor.base_url() and run it ...
//! assert_eq!(vendor.requests()[0].header("x-api-key"), Some("sk-test"));
//! ```
//!
//! Chat requests take their reply from a script, in order; once it is empty every chat
//! request gets the fallback reply. Model listings and unknown routes answer as the vendor
//! does and take nothing from the script. Embeddings requests (OpenAI `POST /v1/embeddings`,
//! Ollama `POST /api/embed`) answer one vector per input, made from the input's bytes (so the
//! same text always gets the same vector) with `dimensions` entries (8 when not asked),
//! unless the script's next reply is a [`Reply::Error`], which they take.
//!
//! What the request asks for is honoured: the `model` is echoed, `stream` chooses between a
//! stream and one JSON document (the default is the vendor's: off for OpenAI and Anthropic,
//! on for Ollama), and OpenAI's `stream_options.include_usage` adds the usage chunk. Token
//! counts are made up but consistent: prompt tokens are a quarter of the request body's
//! bytes; completion tokens are the number of deltas and argument fragments sent.

pub mod stand_in;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::sync::oneshot;

/// Largest request body the fake reads; a bigger one is recorded with a `Null` body.
const MAX_REQUEST_BYTES: usize = 64 << 20;

/// The text of a `Reply::Malformed` stream, around its broken event.
const MALFORMED_TEXT: &str = "Hello there, the next event is broken.";

/// Which vendor's API a fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// OpenAI Chat Completions: `POST /v1/chat/completions` (also `/chat/completions`),
    /// `GET /v1/models`.
    OpenAi,
    /// Anthropic Messages: `POST /v1/messages`, `GET /v1/models`.
    Anthropic,
    /// Ollama's native API: `POST /api/chat`, `GET /api/tags`, `GET /api/version`, `GET /`.
    Ollama,
}

/// One answer to one chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Replays a fixture file byte-for-byte, one event per written chunk, with status 200 and
    /// content-type `text/event-stream` (Ollama: `application/x-ndjson`, one line per chunk).
    /// For Anthropic, a file that does not end with a blank line gets the missing `\n`s, as
    /// the vendor's real stream ends with one (otherwise the last event is never
    /// dispatched). Path relative to `tests/fixtures/`; read when the reply is pushed.
    Fixture(&'static str),
    /// A streamed text answer, split into several deltas (one per word), with usage, in the
    /// flavor's format; finishes with `stop` / `end_turn` / `done_reason: "stop"`.
    Text(String),
    /// Parallel tool calls (name, arguments as JSON text), optionally preceded by text,
    /// finishing with the tool-calls reason (`tool_calls` / `tool_use`; Ollama says `stop`).
    /// Arguments are streamed in several fragments: OpenAI as `index`-keyed fragments,
    /// Anthropic as `tool_use` blocks with `input_json_delta`s (the first one empty), Ollama
    /// as whole calls whose arguments are a JSON object. Anthropic and Ollama only ever send
    /// parsed input, so for them the arguments must be a JSON object (checked when pushed);
    /// OpenAI may send any text, broken JSON included.
    ToolCalls {
        text: Option<String>,
        calls: Vec<(String, String)>,
    },
    /// An HTTP error as the vendor sends it: `status`, the vendor's JSON error body for that
    /// status, and a `retry-after` header (seconds) when given. An empty `message` stands
    /// for the vendor's usual message for that status.
    Error {
        status: u16,
        retry_after: Option<u32>,
        message: String,
    },
    /// A stream whose second event is not valid JSON (cut in half); the other events are a
    /// normal text answer. Non-streamed: a truncated JSON document.
    Malformed,
    /// Streams the opening events and the text deltas, then drops the connection without the
    /// finish events or the end of the chunked body: the client sees an incomplete body.
    CutMidway(String),
    /// Streams the text slowly: the opening events and the first delta at once, then one
    /// delta per `delay`, then finishes normally. Stops as soon as the client disconnects
    /// (see [`FakeVendor::open_streams`]). Non-streamed: the whole answer after the same wait.
    Slow { text: String, delay: Duration },
    /// A mid-stream error after the opening events, then the end of the stream: OpenAI
    /// `data: {"error": {...}}` (`server_error`), Anthropic `event: error` with an
    /// `overloaded_error`, Ollama an `{"error": "..."}` line. The string is the message.
    /// Non-streamed: the HTTP error the vendor would answer instead (500, 529, 500).
    MidStreamError(String),
    /// A careless vendor or proxy that quotes the credential it received (`authorization:
    /// Bearer …`, `x-api-key`): a streamed text answer `You sent KEY.` whose delta holding the
    /// key is written in two flushes split in the middle of the key, and the key in an
    /// `x-echo` response header. Without a credential the answer says `You sent nothing.`
    /// Non-streamed: the same text as one JSON document.
    EchoKey,
}

impl Reply {
    /// A streamed text answer.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Text(text.into())
    }

    /// One tool call, no text.
    pub fn tool_call(name: impl Into<String>, arguments: impl Into<String>) -> Reply {
        Reply::ToolCalls {
            text: None,
            calls: vec![(name.into(), arguments.into())],
        }
    }

    /// Parallel tool calls `(name, arguments)`, no text.
    pub fn tool_calls<N: Into<String>, A: Into<String>>(
        calls: impl IntoIterator<Item = (N, A)>,
    ) -> Reply {
        Reply::ToolCalls {
            text: None,
            calls: calls
                .into_iter()
                .map(|(n, a)| (n.into(), a.into()))
                .collect(),
        }
    }

    /// 429 with `retry-after: seconds` and the vendor's rate-limit body.
    pub fn rate_limited(retry_after_seconds: u32) -> Reply {
        Reply::Error {
            status: 429,
            retry_after: Some(retry_after_seconds),
            message: String::new(),
        }
    }

    /// An HTTP error with the vendor's usual body for `status` (401 bad key, 404 unknown
    /// model, 500, Anthropic's 529 overloaded, ...).
    pub fn status(status: u16) -> Reply {
        Reply::error(status, "")
    }

    /// An HTTP error with the vendor's body for `status` carrying `message`. OpenAI marks a
    /// 400 whose message mentions "context" as `context_length_exceeded`.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::Error {
            status,
            retry_after: None,
            message: message.into(),
        }
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// In arrival order; names are lowercase.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Null` when it is not JSON (or empty).
    pub body: Value,
}

impl Recorded {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A fake vendor serving on `127.0.0.1`; stops when dropped.
pub struct FakeVendor {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeVendor {
    /// Starts on `127.0.0.1:0`. Replies are taken from the script in order; when the script
    /// is empty, the fallback reply is used (default: `Reply::text("ok")`).
    pub async fn start(flavor: Flavor) -> FakeVendor {
        Self::start_on(flavor, "127.0.0.1:0").await
    }

    /// Like [`start`](Self::start) on a chosen address (the `fake-llm` demo binary).
    pub async fn start_on(flavor: Flavor, address: &str) -> FakeVendor {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .expect("bind a loopback port for the fake vendor");
        let addr = listener.local_addr().expect("local address");
        // Without TCP_NODELAY each small event of a stream can wait for the client's delayed
        // ACK (tens of milliseconds), which would make streams bursty and benchmarks slow.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let shared = Arc::new(Shared {
            flavor,
            script: Mutex::new(Script {
                queue: VecDeque::new(),
                fallback: Arc::new(Prepared::new(flavor, Reply::text("ok"))),
            }),
            responder: Mutex::new(None),
            recording: AtomicBool::new(true),
            recorded: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            open_streams: Arc::new(AtomicUsize::new(0)),
            models: Mutex::new(None),
        });
        let app = Router::new().fallback(receive).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeVendor {
            shared,
            addr,
            stop: Some(stop),
        }
    }

    pub fn flavor(&self) -> Flavor {
        self.shared.flavor
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What a client is configured with: OpenAI `http://127.0.0.1:PORT/v1`, Anthropic and
    /// Ollama `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        match self.shared.flavor {
            Flavor::OpenAi => format!("http://{}/v1", self.addr),
            Flavor::Anthropic | Flavor::Ollama => format!("http://{}", self.addr),
        }
    }

    /// The chat endpoint: `{base}/chat/completions`, `{base}/v1/messages` or `{base}/api/chat`.
    pub fn chat_url(&self) -> String {
        let path = match self.shared.flavor {
            Flavor::OpenAi => "/chat/completions",
            Flavor::Anthropic => "/v1/messages",
            Flavor::Ollama => "/api/chat",
        };
        format!("{}{path}", self.base_url())
    }

    /// Appends `reply` to the script. Panics at once on a reply the vendor could not send
    /// (a missing fixture, an invalid status, non-object tool arguments for Anthropic or
    /// Ollama).
    pub fn push(&self, reply: Reply) {
        let prepared = Arc::new(Prepared::new(self.shared.flavor, reply));
        self.shared.script().queue.push_back(prepared);
    }

    /// Chooses the reply for each chat request from its JSON body once the script is empty
    /// (instead of the fallback) — a model stand-in for demos.
    pub fn set_responder(&self, responder: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        *lock(&self.shared.responder) = Some(Arc::new(responder));
    }

    /// The reply for chat requests once the script is empty.
    pub fn set_fallback(&self, reply: Reply) {
        let prepared = Arc::new(Prepared::new(self.shared.flavor, reply));
        self.shared.script().fallback = prepared;
    }

    /// The models its model list (`GET /models`, `/v1/models`, Ollama's `/api/tags`) names
    /// from now on, in the vendor's format, instead of the vendor's own — what a local
    /// server that loaded other models lists.
    pub fn set_models(&self, ids: &[&str]) {
        *lock(&self.shared.models) = Some(ids.iter().map(|id| (*id).to_owned()).collect());
    }

    /// Whether to keep every request for [`FakeVendor::requests`] (on by default). A
    /// benchmark turns it off so memory stays flat; the count is kept either way.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    /// Every request received while recording, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.recorded).clone()
    }

    /// How many requests arrived (of any route). A request is counted once it is recorded.
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::Acquire)
    }

    /// Streamed response bodies being sent right now. It drops when a stream ends or its
    /// client disconnects, so a test of an abort can wait for it to reach 0.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::Acquire)
    }
}

impl Drop for FakeVendor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

type Responder = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

/// State shared by the handle and the server.
struct Shared {
    flavor: Flavor,
    script: Mutex<Script>,
    responder: Mutex<Option<Responder>>,
    recording: AtomicBool,
    recorded: Mutex<Vec<Recorded>>,
    count: AtomicUsize,
    open_streams: Arc<AtomicUsize>,
    /// Model ids its model list names instead of the recorded ones.
    models: Mutex<Option<Vec<String>>>,
}

struct Script {
    queue: VecDeque<Arc<Prepared>>,
    fallback: Arc<Prepared>,
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        lock(&self.script)
    }

    fn next_reply(&self, body: &Value) -> Arc<Prepared> {
        let mut script = self.script();
        if let Some(reply) = script.queue.pop_front() {
            return reply;
        }
        if let Some(responder) = lock(&self.responder).clone() {
            return Arc::new(Prepared::new(self.flavor, responder(body)));
        }
        script.fallback.clone()
    }

    /// The script's next reply if it is an error (taken), for requests that only ever fail
    /// by script.
    fn next_error(&self) -> Option<Arc<Prepared>> {
        let mut script = self.script();
        let is_error = matches!(
            script.queue.front().map(|p| &**p),
            Some(Prepared::Generate(Reply::Error { .. }))
        );
        if is_error {
            script.queue.pop_front()
        } else {
            None
        }
    }

    fn record(&self, parts: &Parts, body: Value) {
        if self.recording.load(Ordering::Relaxed) {
            let recorded = Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| {
                        let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                        (n.as_str().to_owned(), value)
                    })
                    .collect(),
                body,
            };
            lock(&self.recorded).push(recorded);
        }
        self.count.fetch_add(1, Ordering::Release);
    }
}

/// A panicking test thread must not turn every later request into a second panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A reply made ready when pushed, so the request path does no file I/O and a bad reply
/// fails in the test that pushed it.
enum Prepared {
    Replay {
        content_type: &'static str,
        events: Vec<Bytes>,
    },
    Generate(Reply),
}

impl Prepared {
    fn new(flavor: Flavor, reply: Reply) -> Prepared {
        match reply {
            Reply::Fixture(path) => replay(flavor, path),
            Reply::ToolCalls { ref calls, .. } if flavor != Flavor::OpenAi => {
                for (name, arguments) in calls {
                    let parsed = serde_json::from_str::<Value>(arguments);
                    assert!(
                        parsed.is_ok_and(|v| v.is_object()),
                        "{flavor:?} only sends tool input that is a JSON object; \
                         the arguments of {name} are {arguments:?}"
                    );
                }
                Prepared::Generate(reply)
            }
            Reply::Error { status, .. } => {
                assert!(
                    StatusCode::from_u16(status).is_ok(),
                    "{status} is not an HTTP status code"
                );
                Prepared::Generate(reply)
            }
            reply => Prepared::Generate(reply),
        }
    }
}

/// A fixture's bytes, split after each event (SSE: a blank line; NDJSON: a line).
fn replay(flavor: Flavor, path: &'static str) -> Prepared {
    let full = format!("{}/../fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    let mut bytes = std::fs::read(&full).unwrap_or_else(|e| panic!("reading fixture {full}: {e}"));
    if flavor == Flavor::Anthropic && !bytes.ends_with(b"\n\n") {
        let missing = if bytes.ends_with(b"\n") { 1 } else { 2 };
        bytes.extend(std::iter::repeat_n(b'\n', missing));
    }
    let (content_type, separator): (_, &[u8]) = match flavor {
        Flavor::OpenAi | Flavor::Anthropic => ("text/event-stream", b"\n\n"),
        Flavor::Ollama => ("application/x-ndjson", b"\n"),
    };
    let bytes = Bytes::from(bytes);
    let mut events = Vec::new();
    let mut start = 0;
    while let Some(at) = bytes[start..]
        .windows(separator.len())
        .position(|w| w == separator)
    {
        let end = start + at + separator.len();
        events.push(bytes.slice(start..end));
        start = end;
    }
    if start < bytes.len() {
        events.push(bytes.slice(start..));
    }
    Prepared::Replay {
        content_type,
        events,
    }
}

/// The single handler: records the request, then answers it by route.
async fn receive(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .unwrap_or_default();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let wire = wire(shared.flavor);
    let mut ask = Ask::read(wire, &json, bytes.len());
    ask.credential = credential(&parts);
    let plan = match wire.route(&parts.method, parts.uri.path(), &ask) {
        Route::Chat => answer(wire, &shared.next_reply(&json), &ask),
        Route::Embeddings => match shared.next_error() {
            Some(error) => answer(wire, &error, &ask),
            None => embeddings(shared.flavor, &json, &ask),
        },
        Route::Other(plan) => match model_list(&shared, &parts) {
            Some(body) => Plan::json(StatusCode::OK, wire, body),
            None => plan,
        },
    };
    shared.record(&parts, json);
    plan.into_response(wire, &ask, &shared.open_streams)
}

/// One vector per input of an embeddings request, in the vendor's shape. Each entry is a
/// byte of the input (cycled) scaled to [0, 1), so a test can tell which text a vector is of.
fn embeddings(flavor: Flavor, body: &Value, ask: &Ask) -> Plan {
    let wire = wire(flavor);
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => Vec::new(),
    };
    let dims = body["dimensions"].as_u64().unwrap_or(8).max(1) as usize;
    let vector = |text: &str| -> Vec<f64> {
        let bytes = if text.is_empty() {
            b" "
        } else {
            text.as_bytes()
        };
        (0..dims)
            .map(|i| f64::from(bytes[i % bytes.len()]) / 256.0)
            .collect()
    };
    let tokens: usize = inputs.iter().map(|i| i.len().div_ceil(4)).sum();
    let answer = match flavor {
        Flavor::OpenAi => serde_json::json!({
            "object": "list",
            "data": inputs.iter().enumerate().map(|(index, text)| serde_json::json!({
                "object": "embedding", "index": index, "embedding": vector(text),
            })).collect::<Vec<_>>(),
            "model": ask.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
        Flavor::Ollama => serde_json::json!({
            "model": ask.model,
            "embeddings": inputs.iter().map(|text| vector(text)).collect::<Vec<_>>(),
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": tokens,
        }),
        Flavor::Anthropic => unreachable!("Anthropic has no embeddings route"),
    };
    Plan::json(StatusCode::OK, wire, answer.to_string())
}

/// The body of a model list request when [`FakeVendor::set_models`] chose the models, in
/// the vendor's shape.
fn model_list(shared: &Shared, parts: &Parts) -> Option<String> {
    let ids = lock(&shared.models).clone()?;
    if parts.method != Method::GET {
        return None;
    }
    let path = parts.uri.path();
    let entries: Vec<Value> = match shared.flavor {
        Flavor::OpenAi if path == "/v1/models" || path == "/models" => ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "object": "model", "created": 1721172741, "owned_by": "system"}))
            .collect(),
        Flavor::Anthropic if path == "/v1/models" => ids
            .iter()
            .map(|id| serde_json::json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-09-29T00:00:00Z"}))
            .collect(),
        Flavor::Ollama if path == "/api/tags" => ids
            .iter()
            .map(|id| serde_json::json!({"name": id, "model": id, "modified_at": "2025-10-01T12:00:00.000000000Z", "size": 1, "digest": "0", "details": {}}))
            .collect(),
        _ => return None,
    };
    let body = match shared.flavor {
        Flavor::OpenAi => serde_json::json!({"object": "list", "data": entries}),
        Flavor::Anthropic => serde_json::json!({"data": entries, "has_more": false}),
        Flavor::Ollama => serde_json::json!({"models": entries}),
    };
    Some(body.to_string())
}

/// What a chat request asks for.
struct Ask {
    model: String,
    stream: bool,
    include_usage: bool,
    prompt_tokens: usize,
    request_id: Option<String>,
    /// The API key the request carried, for [`Reply::EchoKey`].
    credential: Option<String>,
}

impl Ask {
    fn read(wire: &dyn Wire, body: &Value, body_len: usize) -> Ask {
        Ask {
            model: body["model"]
                .as_str()
                .unwrap_or(wire.default_model())
                .to_owned(),
            stream: body["stream"]
                .as_bool()
                .unwrap_or(wire.streams_by_default()),
            include_usage: body["stream_options"]["include_usage"]
                .as_bool()
                .unwrap_or(false),
            prompt_tokens: (body_len / 4).max(1),
            request_id: wire
                .request_id_header()
                .map(|_| format!("req_{}", random_id(24))),
            credential: None,
        }
    }
}

/// The key a client sent: OpenAI's bearer token or Anthropic's `x-api-key`.
fn credential(parts: &Parts) -> Option<String> {
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    header(header::AUTHORIZATION.as_str())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(&v).to_owned())
        .or_else(|| header("x-api-key"))
}

enum Route {
    Chat,
    Embeddings,
    Other(Plan),
}

/// The events of a streamed answer, in three runs so the scripted misbehaviours can cut,
/// slow down or break them.
struct Events {
    /// Before the first text delta (role chunk; `message_start`, block start, `ping`).
    opening: Vec<Bytes>,
    /// One per text delta.
    deltas: Vec<Bytes>,
    /// Tool calls, finish, usage, end of stream.
    tail: Vec<Bytes>,
}

/// What a generated answer says.
struct Turn<'a> {
    text: Option<&'a str>,
    calls: &'a [(String, String)],
}

impl<'a> Turn<'a> {
    fn text(text: &'a str) -> Turn<'a> {
        Turn {
            text: Some(text),
            calls: &[],
        }
    }

    fn completion_tokens(&self) -> usize {
        let text = self.text.map_or(0, |t| text_deltas(t).len());
        let calls: usize = self
            .calls
            .iter()
            .map(|(_, arguments)| 1 + fragments(arguments).len())
            .sum();
        (text + calls).max(1)
    }
}

/// One vendor's wire format.
trait Wire: Sync {
    fn default_model(&self) -> &'static str;
    fn streams_by_default(&self) -> bool;
    fn stream_type(&self) -> &'static str;
    fn json_type(&self) -> &'static str;
    /// The response header carrying a request id, if the vendor sends one.
    fn request_id_header(&self) -> Option<&'static str>;
    fn route(&self, method: &Method, path: &str, ask: &Ask) -> Route;
    fn events(&self, turn: &Turn, ask: &Ask) -> Events;
    /// The non-streamed answer.
    fn complete(&self, turn: &Turn, ask: &Ask) -> String;
    /// The error body for `status`; an empty `message` means the vendor's usual one.
    fn error_body(&self, status: StatusCode, message: &str, ask: &Ask) -> String;
    fn mid_stream_error(&self, message: &str) -> Bytes;
    /// What a non-streamed request gets instead of a mid-stream error.
    fn mid_stream_error_status(&self) -> StatusCode;
}

fn wire(flavor: Flavor) -> &'static dyn Wire {
    match flavor {
        Flavor::OpenAi => &OpenAi,
        Flavor::Anthropic => &Anthropic,
        Flavor::Ollama => &Ollama,
    }
}

fn answer(wire: &dyn Wire, reply: &Prepared, ask: &Ask) -> Plan {
    let reply = match reply {
        Prepared::Replay {
            content_type,
            events,
        } => return Plan::stream(content_type, events.iter().cloned().map(Step::Send)),
        Prepared::Generate(reply) => reply,
    };
    match reply {
        Reply::Fixture(_) => unreachable!("fixtures are read when pushed"),
        Reply::Text(text) => answer_turn(wire, &Turn::text(text), ask),
        Reply::ToolCalls { text, calls } => answer_turn(
            wire,
            &Turn {
                text: text.as_deref(),
                calls,
            },
            ask,
        ),
        Reply::Error {
            status,
            retry_after,
            message,
        } => {
            let status = StatusCode::from_u16(*status).expect("checked when pushed");
            let mut plan = Plan::json(status, wire, wire.error_body(status, message, ask));
            if let Some(seconds) = retry_after {
                plan.headers
                    .push((header::RETRY_AFTER, HeaderValue::from(*seconds)));
            }
            plan
        }
        Reply::Malformed => {
            let turn = Turn::text(MALFORMED_TEXT);
            if !ask.stream {
                let broken = break_json(wire.complete(&turn, ask).as_bytes());
                return Plan::json(StatusCode::OK, wire, broken);
            }
            let Events {
                opening,
                deltas,
                tail,
            } = wire.events(&turn, ask);
            let mut events: Vec<Bytes> = opening.into_iter().chain(deltas).chain(tail).collect();
            events[1] = break_json(&events[1]);
            Plan::stream(wire.stream_type(), events.into_iter().map(Step::Send))
        }
        Reply::CutMidway(text) => {
            let turn = Turn::text(text);
            if !ask.stream {
                let complete = Bytes::from(wire.complete(&turn, ask));
                let half = complete.slice(..complete.len() / 2);
                return Plan::stream(wire.json_type(), [Step::Send(half), Step::Cut]);
            }
            let events = wire.events(&turn, ask);
            let sent = events.opening.into_iter().chain(events.deltas);
            Plan::stream(wire.stream_type(), sent.map(Step::Send).chain([Step::Cut]))
        }
        Reply::Slow { text, delay } => {
            let turn = Turn::text(text);
            if !ask.stream {
                let waits = turn.completion_tokens().saturating_sub(1) as u32;
                let complete = Bytes::from(wire.complete(&turn, ask));
                return Plan::stream(
                    wire.json_type(),
                    [Step::Wait(*delay * waits), Step::Send(complete)],
                );
            }
            let events = wire.events(&turn, ask);
            let mut steps: Vec<Step> = events.opening.into_iter().map(Step::Send).collect();
            for (n, delta) in events.deltas.into_iter().enumerate() {
                if n > 0 {
                    steps.push(Step::Wait(*delay));
                }
                steps.push(Step::Send(delta));
            }
            steps.extend(events.tail.into_iter().map(Step::Send));
            Plan::stream(wire.stream_type(), steps)
        }
        Reply::EchoKey => {
            let key = ask.credential.as_deref();
            let text = format!("You sent {}.", key.unwrap_or("nothing"));
            let turn = Turn::text(&text);
            let mut plan = if !ask.stream {
                Plan::json(StatusCode::OK, wire, wire.complete(&turn, ask))
            } else {
                let events = wire.events(&turn, ask);
                let mut steps: Vec<Step> = events.opening.into_iter().map(Step::Send).collect();
                for delta in events.deltas {
                    let at = key.and_then(|key| {
                        let found = delta.windows(key.len()).position(|w| w == key.as_bytes());
                        found.map(|at| at + key.len() / 2)
                    });
                    match at {
                        // The wait makes the halves arrive as two reads, not one.
                        Some(at) => steps.extend([
                            Step::Send(delta.slice(..at)),
                            Step::Wait(Duration::from_millis(50)),
                            Step::Send(delta.slice(at..)),
                        ]),
                        None => steps.push(Step::Send(delta)),
                    }
                }
                steps.extend(events.tail.into_iter().map(Step::Send));
                Plan::stream(wire.stream_type(), steps)
            };
            if let Some(value) = key.and_then(|k| HeaderValue::from_str(k).ok()) {
                plan.headers
                    .push((HeaderName::from_static("x-echo"), value));
            }
            plan
        }
        Reply::MidStreamError(message) => {
            if !ask.stream {
                let status = wire.mid_stream_error_status();
                return Plan::json(status, wire, wire.error_body(status, message, ask));
            }
            let opening = wire.events(&Turn::text(""), ask).opening;
            let events = opening.into_iter().chain([wire.mid_stream_error(message)]);
            Plan::stream(wire.stream_type(), events.map(Step::Send))
        }
    }
}

fn answer_turn(wire: &dyn Wire, turn: &Turn, ask: &Ask) -> Plan {
    if !ask.stream {
        return Plan::json(StatusCode::OK, wire, wire.complete(turn, ask));
    }
    let Events {
        opening,
        deltas,
        tail,
    } = wire.events(turn, ask);
    let events = opening.into_iter().chain(deltas).chain(tail);
    Plan::stream(wire.stream_type(), events.map(Step::Send))
}

/// `event` with its JSON cut in half (framing and trailing newlines kept).
fn break_json(event: &[u8]) -> Bytes {
    let text = std::str::from_utf8(event).expect("events are UTF-8");
    let start = text.find('{').unwrap_or(0);
    let end = text.trim_end_matches('\n').len();
    let mut cut = start + (end - start) / 2;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Bytes::from([&event[..cut], &event[end..]].concat())
}

/// A response to send.
struct Plan {
    status: StatusCode,
    content_type: &'static str,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: PlanBody,
}

enum PlanBody {
    /// Sent with a content-length, like the vendors' JSON answers.
    Whole(Bytes),
    /// Sent chunked, step by step, like the vendors' streams.
    Steps(Vec<Step>),
}

enum Step {
    /// One chunk of the body, written on its own.
    Send(Bytes),
    Wait(Duration),
    /// Fails the body, which makes hyper drop the connection without ending the chunked
    /// encoding.
    Cut,
}

impl Plan {
    fn json(status: StatusCode, wire: &dyn Wire, body: impl Into<Bytes>) -> Plan {
        Plan::fixed(status, wire.json_type(), body)
    }

    fn fixed(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Plan {
        Plan {
            status,
            content_type,
            headers: Vec::new(),
            body: PlanBody::Whole(body.into()),
        }
    }

    fn stream(content_type: &'static str, steps: impl IntoIterator<Item = Step>) -> Plan {
        Plan {
            status: StatusCode::OK,
            content_type,
            headers: Vec::new(),
            body: PlanBody::Steps(steps.into_iter().collect()),
        }
    }

    fn into_response(self, wire: &dyn Wire, ask: &Ask, open: &Arc<AtomicUsize>) -> Response {
        let mut response = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, self.content_type);
        if let (Some(name), Some(id)) = (wire.request_id_header(), &ask.request_id) {
            response = response.header(name, id);
        }
        for (name, value) in self.headers {
            response = response.header(name, value);
        }
        let body = match self.body {
            PlanBody::Whole(bytes) => Body::from(bytes),
            PlanBody::Steps(steps) => Body::from_stream(sending(steps, open)),
        };
        response.body(body).expect("a valid response")
    }
}

/// The body stream of a plan: one chunk per event, written and flushed on its own (hyper
/// flushes whenever the body is pending, so it yields between events), with waits where
/// planned. Dropped — waits included — when the client goes away.
fn sending(
    steps: Vec<Step>,
    open: &Arc<AtomicUsize>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    struct Sending {
        steps: std::vec::IntoIter<Step>,
        flush_first: bool,
        _open: OpenStream,
    }
    let state = Sending {
        steps: steps.into_iter(),
        flush_first: false,
        _open: OpenStream::new(open),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            let chunk = match state.steps.next()? {
                Step::Wait(delay) => {
                    tokio::time::sleep(delay).await;
                    state.flush_first = false;
                    continue;
                }
                Step::Send(bytes) => Ok(bytes),
                Step::Cut => Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the fake vendor cuts this stream (Reply::CutMidway)",
                )),
            };
            // Being pending once makes hyper write out what it holds: the previous event goes
            // out on its own, and before a cut, the events before it reach the client.
            if state.flush_first {
                tokio::task::yield_now().await;
            }
            state.flush_first = true;
            return Some((chunk, state));
        }
    })
}

/// Counts a streamed body while it exists.
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(count: &Arc<AtomicUsize>) -> OpenStream {
        count.fetch_add(1, Ordering::AcqRel);
        OpenStream(count.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// OpenAI Chat Completions.
struct OpenAi;

const OPENAI_FINGERPRINT: &str = "fp_f4ke0c0ffee";

const OPENAI_MODELS: &str = r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"}]}"#;

/// The common start of every chunk of one stream, up to the `choices` array's `[`.
struct ChunkHead(String);

impl ChunkHead {
    fn new(ask: &Ask) -> ChunkHead {
        ChunkHead(format!(
            r#"{{"id":"chatcmpl-{}","object":"chat.completion.chunk","created":{},"model":{},"system_fingerprint":"{OPENAI_FINGERPRINT}","choices":["#,
            random_id(29),
            unix_now(),
            q(&ask.model),
        ))
    }

    /// `finish_reason` is raw JSON: `null` or a quoted reason.
    fn choice(&self, delta: &str, finish_reason: &str) -> Bytes {
        sse_data(&format!(
            r#"{}{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish_reason}}}]}}"#,
            self.0
        ))
    }

    fn usage(&self, prompt: usize, completion: usize) -> Bytes {
        sse_data(&format!(
            r#"{}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}"#,
            self.0,
            prompt + completion
        ))
    }
}

impl Wire for OpenAi {
    fn default_model(&self) -> &'static str {
        "gpt-4o-mini"
    }

    fn streams_by_default(&self) -> bool {
        false
    }

    fn stream_type(&self) -> &'static str {
        "text/event-stream; charset=utf-8"
    }

    fn json_type(&self) -> &'static str {
        "application/json"
    }

    fn request_id_header(&self) -> Option<&'static str> {
        Some("x-request-id")
    }

    fn route(&self, method: &Method, path: &str, _: &Ask) -> Route {
        match (method, path) {
            (&Method::POST, "/v1/chat/completions" | "/chat/completions") => Route::Chat,
            (&Method::POST, "/v1/embeddings" | "/embeddings") => Route::Embeddings,
            (&Method::GET, "/v1/models" | "/models") => {
                Route::Other(Plan::json(StatusCode::OK, self, OPENAI_MODELS))
            }
            _ => {
                let message = q(&format!("Invalid URL ({method} {path})"));
                let body = format!(
                    r#"{{"error":{{"message":{message},"type":"invalid_request_error","param":null,"code":null}}}}"#
                );
                Route::Other(Plan::json(StatusCode::NOT_FOUND, self, body))
            }
        }
    }

    fn events(&self, turn: &Turn, ask: &Ask) -> Events {
        let head = ChunkHead::new(ask);
        // With text first, the role chunk carries empty content; before tool calls, null.
        let content = if turn.text.is_some() { r#""""# } else { "null" };
        let opening = vec![head.choice(
            &format!(r#"{{"role":"assistant","content":{content},"refusal":null}}"#),
            "null",
        )];
        let deltas = turn
            .text
            .map(text_deltas)
            .unwrap_or_default()
            .into_iter()
            .map(|t| head.choice(&format!(r#"{{"content":{}}}"#, q(t)), "null"))
            .collect();
        let mut tail = Vec::new();
        for (index, (name, arguments)) in turn.calls.iter().enumerate() {
            tail.push(head.choice(
                &format!(
                    r#"{{"tool_calls":[{{"index":{index},"id":"call_{}","type":"function","function":{{"name":{},"arguments":""}}}}]}}"#,
                    random_id(24),
                    q(name)
                ),
                "null",
            ));
            for fragment in fragments(arguments) {
                tail.push(head.choice(
                    &format!(
                        r#"{{"tool_calls":[{{"index":{index},"function":{{"arguments":{}}}}}]}}"#,
                        q(fragment)
                    ),
                    "null",
                ));
            }
        }
        let finish = if turn.calls.is_empty() {
            r#""stop""#
        } else {
            r#""tool_calls""#
        };
        tail.push(head.choice("{}", finish));
        if ask.include_usage {
            tail.push(head.usage(ask.prompt_tokens, turn.completion_tokens()));
        }
        tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
        Events {
            opening,
            deltas,
            tail,
        }
    }

    fn complete(&self, turn: &Turn, ask: &Ask) -> String {
        let content = turn.text.map_or_else(|| "null".to_owned(), q);
        let mut tool_calls = String::new();
        if !turn.calls.is_empty() {
            let calls: Vec<String> = turn
                .calls
                .iter()
                .map(|(name, arguments)| {
                    format!(
                        r#"{{"id":"call_{}","type":"function","function":{{"name":{},"arguments":{}}}}}"#,
                        random_id(24),
                        q(name),
                        q(arguments)
                    )
                })
                .collect();
            tool_calls = format!(r#","tool_calls":[{}]"#, calls.join(","));
        }
        let finish = if turn.calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        let (prompt, completion) = (ask.prompt_tokens, turn.completion_tokens());
        format!(
            r#"{{"id":"chatcmpl-{}","object":"chat.completion","created":{},"model":{},"choices":[{{"index":0,"message":{{"role":"assistant","content":{content}{tool_calls},"refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"{finish}"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}},"service_tier":"default","system_fingerprint":"{OPENAI_FINGERPRINT}"}}"#,
            random_id(29),
            unix_now(),
            q(&ask.model),
            prompt + completion
        )
    }

    fn error_body(&self, status: StatusCode, message: &str, ask: &Ask) -> String {
        let context = message.to_lowercase().contains("context");
        let (kind, code, param) = match status.as_u16() {
            400 if context => (
                "invalid_request_error",
                "context_length_exceeded",
                "messages",
            ),
            401 => ("invalid_request_error", "invalid_api_key", ""),
            404 => ("invalid_request_error", "model_not_found", ""),
            429 => ("requests", "rate_limit_exceeded", ""),
            500.. => ("server_error", "", ""),
            _ => ("invalid_request_error", "", ""),
        };
        let usual;
        let message = if message.is_empty() {
            usual = match status.as_u16() {
                401 => "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.".to_owned(),
                404 => format!("The model `{}` does not exist or you do not have access to it.", ask.model),
                429 => format!("Rate limit reached for {} in organization org-fake on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit https://platform.openai.com/account/rate-limits to learn more.", ask.model),
                503 => "The engine is currently overloaded, please try again later.".to_owned(),
                500.. => "The server had an error while processing your request. Sorry about that!".to_owned(),
                _ => format!("Invalid request ({status})."),
            };
            &usual
        } else {
            message
        };
        let or_null = |s: &str| {
            if s.is_empty() {
                "null".to_owned()
            } else {
                q(s)
            }
        };
        format!(
            r#"{{"error":{{"message":{},"type":"{kind}","param":{},"code":{}}}}}"#,
            q(message),
            or_null(param),
            or_null(code)
        )
    }

    fn mid_stream_error(&self, message: &str) -> Bytes {
        sse_data(&format!(
            r#"{{"error":{{"message":{},"type":"server_error","param":null,"code":null}}}}"#,
            q(message)
        ))
    }

    fn mid_stream_error_status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// Anthropic Messages.
struct Anthropic;

const ANTHROPIC_MODELS: &str = r#"{"data":[{"type":"model","id":"claude-sonnet-4-5-20250929","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z"},{"type":"model","id":"claude-haiku-4-5-20251001","display_name":"Claude Haiku 4.5","created_at":"2025-10-15T00:00:00Z"}],"has_more":false,"first_id":"claude-sonnet-4-5-20250929","last_id":"claude-haiku-4-5-20251001"}"#;

impl Anthropic {
    fn error_json(kind: &str, message: &str, ask: &Ask) -> String {
        let request_id = ask.request_id.as_deref().unwrap_or_default();
        format!(
            r#"{{"type":"error","error":{{"type":"{kind}","message":{}}},"request_id":"{request_id}"}}"#,
            q(message)
        )
    }
}

impl Wire for Anthropic {
    fn default_model(&self) -> &'static str {
        "claude-sonnet-4-5"
    }

    fn streams_by_default(&self) -> bool {
        false
    }

    fn stream_type(&self) -> &'static str {
        "text/event-stream; charset=utf-8"
    }

    fn json_type(&self) -> &'static str {
        "application/json"
    }

    fn request_id_header(&self) -> Option<&'static str> {
        Some("request-id")
    }

    fn route(&self, method: &Method, path: &str, ask: &Ask) -> Route {
        match (method, path) {
            (&Method::POST, "/v1/messages") => Route::Chat,
            (&Method::GET, "/v1/models") => {
                Route::Other(Plan::json(StatusCode::OK, self, ANTHROPIC_MODELS))
            }
            _ => {
                let body = Anthropic::error_json("not_found_error", "Not Found", ask);
                Route::Other(Plan::json(StatusCode::NOT_FOUND, self, body))
            }
        }
    }

    fn events(&self, turn: &Turn, ask: &Ask) -> Events {
        let mut opening = vec![sse_event(
            "message_start",
            &format!(
                r#"{{"type":"message_start","message":{{"id":"msg_01{}","type":"message","role":"assistant","model":{},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}}}}"#,
                random_id(22),
                q(&ask.model),
                ask.prompt_tokens
            ),
        )];
        let mut deltas = Vec::new();
        let mut tail = Vec::new();
        let mut index = 0;
        if let Some(text) = turn.text {
            opening.push(sse_event(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ));
            for delta in text_deltas(text) {
                deltas.push(sse_event(
                    "content_block_delta",
                    &format!(
                        r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}}"#,
                        q(delta)
                    ),
                ));
            }
            tail.push(sse_event(
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ));
            index = 1;
        }
        opening.push(sse_event("ping", r#"{"type": "ping"}"#));
        for (name, arguments) in turn.calls {
            tail.push(sse_event(
                "content_block_start",
                &format!(
                    r#"{{"type":"content_block_start","index":{index},"content_block":{{"type":"tool_use","id":"toolu_01{}","name":{},"input":{{}}}}}}"#,
                    random_id(22),
                    q(name)
                ),
            ));
            for partial in std::iter::once("").chain(fragments(arguments)) {
                tail.push(sse_event(
                    "content_block_delta",
                    &format!(
                        r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"input_json_delta","partial_json":{}}}}}"#,
                        q(partial)
                    ),
                ));
            }
            tail.push(sse_event(
                "content_block_stop",
                &format!(r#"{{"type":"content_block_stop","index":{index}}}"#),
            ));
            index += 1;
        }
        let stop_reason = if turn.calls.is_empty() {
            "end_turn"
        } else {
            "tool_use"
        };
        tail.push(sse_event(
            "message_delta",
            &format!(
                r#"{{"type":"message_delta","delta":{{"stop_reason":"{stop_reason}","stop_sequence":null}},"usage":{{"output_tokens":{}}}}}"#,
                turn.completion_tokens()
            ),
        ));
        tail.push(sse_event("message_stop", r#"{"type":"message_stop"}"#));
        Events {
            opening,
            deltas,
            tail,
        }
    }

    fn complete(&self, turn: &Turn, ask: &Ask) -> String {
        let mut content: Vec<String> = Vec::new();
        if let Some(text) = turn.text {
            content.push(format!(r#"{{"type":"text","text":{}}}"#, q(text)));
        }
        for (name, arguments) in turn.calls {
            content.push(format!(
                r#"{{"type":"tool_use","id":"toolu_01{}","name":{},"input":{}}}"#,
                random_id(22),
                q(name),
                compact(arguments)
            ));
        }
        let stop_reason = if turn.calls.is_empty() {
            "end_turn"
        } else {
            "tool_use"
        };
        format!(
            r#"{{"id":"msg_01{}","type":"message","role":"assistant","model":{},"content":[{}],"stop_reason":"{stop_reason}","stop_sequence":null,"usage":{{"input_tokens":{},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":{}}}}}"#,
            random_id(22),
            q(&ask.model),
            content.join(","),
            ask.prompt_tokens,
            turn.completion_tokens()
        )
    }

    fn error_body(&self, status: StatusCode, message: &str, ask: &Ask) -> String {
        let (kind, usual) = match status.as_u16() {
            400 => ("invalid_request_error", "Invalid request.".to_owned()),
            401 => ("authentication_error", "invalid x-api-key".to_owned()),
            403 => (
                "permission_error",
                "Your API key does not have permission to use the specified resource.".to_owned(),
            ),
            404 => ("not_found_error", format!("model: {}", ask.model)),
            413 => (
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.".to_owned(),
            ),
            429 => (
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.".to_owned(),
            ),
            504 => ("timeout_error", "Request timed out.".to_owned()),
            529 => ("overloaded_error", "Overloaded".to_owned()),
            500.. => ("api_error", "Internal server error".to_owned()),
            _ => ("invalid_request_error", format!("Invalid request ({status}).")),
        };
        let message = if message.is_empty() { &usual } else { message };
        Anthropic::error_json(kind, message, ask)
    }

    fn mid_stream_error(&self, message: &str) -> Bytes {
        sse_event(
            "error",
            &format!(
                r#"{{"type":"error","error":{{"type":"overloaded_error","message":{}}}}}"#,
                q(message)
            ),
        )
    }

    fn mid_stream_error_status(&self) -> StatusCode {
        StatusCode::from_u16(529).expect("529 is a status code")
    }
}

/// Ollama's native chat API.
struct Ollama;

const OLLAMA_TAGS: &str = r#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest","modified_at":"2025-10-01T12:00:00.000000000Z","size":2019393189,"digest":"a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"3.2B","quantization_level":"Q4_K_M"}}]}"#;

impl Ollama {
    /// A message object; `extra` is raw JSON to append (the tool calls).
    fn line(ask: &Ask, content: &str, extra: &str, done: &str) -> String {
        format!(
            r#"{{"model":{},"created_at":"{}","message":{{"role":"assistant","content":{}{extra}}},{done}}}"#,
            q(&ask.model),
            rfc3339_now(),
            q(content)
        )
    }

    fn done(turn: &Turn, ask: &Ask) -> String {
        let eval_count = turn.completion_tokens();
        let (load, prompt_eval, eval) = (12_345_678, 23_456_789, eval_count * 15_000_000);
        format!(
            r#""done_reason":"stop","done":true,"total_duration":{},"load_duration":{load},"prompt_eval_count":{},"prompt_eval_duration":{prompt_eval},"eval_count":{eval_count},"eval_duration":{eval}"#,
            load + prompt_eval + eval + 1_000_000,
            ask.prompt_tokens
        )
    }

    fn tool_calls(turn: &Turn) -> String {
        if turn.calls.is_empty() {
            return String::new();
        }
        let calls: Vec<String> = turn
            .calls
            .iter()
            .map(|(name, arguments)| {
                format!(
                    r#"{{"function":{{"name":{},"arguments":{}}}}}"#,
                    q(name),
                    compact(arguments)
                )
            })
            .collect();
        format!(r#","tool_calls":[{}]"#, calls.join(","))
    }
}

impl Wire for Ollama {
    fn default_model(&self) -> &'static str {
        "llama3.2"
    }

    fn streams_by_default(&self) -> bool {
        true
    }

    fn stream_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn json_type(&self) -> &'static str {
        "application/json; charset=utf-8"
    }

    fn request_id_header(&self) -> Option<&'static str> {
        None
    }

    fn route(&self, method: &Method, path: &str, _: &Ask) -> Route {
        let text = "text/plain; charset=utf-8";
        match (method, path) {
            (&Method::POST, "/api/chat") => Route::Chat,
            (&Method::POST, "/api/embed") => Route::Embeddings,
            (&Method::GET, "/api/tags") => {
                Route::Other(Plan::json(StatusCode::OK, self, OLLAMA_TAGS))
            }
            (&Method::GET, "/api/version") => {
                Route::Other(Plan::json(StatusCode::OK, self, r#"{"version":"0.12.6"}"#))
            }
            (&Method::GET | &Method::HEAD, "/") => {
                Route::Other(Plan::fixed(StatusCode::OK, text, "Ollama is running"))
            }
            _ => Route::Other(Plan::fixed(
                StatusCode::NOT_FOUND,
                text,
                "404 page not found",
            )),
        }
    }

    fn events(&self, turn: &Turn, ask: &Ask) -> Events {
        let line = |json: String| Bytes::from(json + "\n");
        let deltas = turn
            .text
            .map(text_deltas)
            .unwrap_or_default()
            .into_iter()
            .map(|t| line(Ollama::line(ask, t, "", r#""done":false"#)))
            .collect();
        let mut tail = Vec::new();
        if !turn.calls.is_empty() {
            let calls = Ollama::tool_calls(turn);
            tail.push(line(Ollama::line(ask, "", &calls, r#""done":false"#)));
        }
        tail.push(line(Ollama::line(ask, "", "", &Ollama::done(turn, ask))));
        Events {
            opening: Vec::new(),
            deltas,
            tail,
        }
    }

    fn complete(&self, turn: &Turn, ask: &Ask) -> String {
        let content = turn.text.unwrap_or_default();
        let calls = Ollama::tool_calls(turn);
        Ollama::line(ask, content, &calls, &Ollama::done(turn, ask))
    }

    fn error_body(&self, status: StatusCode, message: &str, ask: &Ask) -> String {
        let usual = match status.as_u16() {
            404 => format!(r#"model "{}" not found, try pulling it first"#, ask.model),
            401 => "unauthorized".to_owned(),
            503 => "server busy, please try again.  maximum pending requests exceeded".to_owned(),
            500 => "llama runner process has terminated: exit status 2".to_owned(),
            _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
        };
        let message = if message.is_empty() { &usual } else { message };
        format!(r#"{{"error":{}}}"#, q(message))
    }

    fn mid_stream_error(&self, message: &str) -> Bytes {
        Bytes::from(format!("{{\"error\":{}}}\n", q(message)))
    }

    fn mid_stream_error_status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// `data: <json>` and a blank line.
fn sse_data(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

/// `event: <name>`, `data: <json>` and a blank line.
fn sse_event(name: &str, json: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// `s` as a JSON string literal.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// JSON text re-serialized compactly, as a vendor that parsed it sends it back.
fn compact(json: &str) -> String {
    serde_json::from_str::<Value>(json)
        .expect("tool input was checked to be JSON when pushed")
        .to_string()
}

/// Text cut before each run of whitespace that follows a word, the way tokens carry their
/// leading space: "Hello there!" is "Hello", " there!".
fn text_deltas(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if space && in_word {
            pieces.push(&text[start..i]);
            start = i;
        }
        in_word = !space;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Tool arguments in several fragments of about six characters (at least two, at most 24),
/// cut on character boundaries.
fn fragments(s: &str) -> Vec<&str> {
    let chars = s.chars().count();
    if chars == 0 {
        return Vec::new();
    }
    let pieces = (chars / 6).clamp(2, 24).min(chars);
    let per_piece = chars.div_ceil(pieces);
    let mut out = Vec::with_capacity(pieces);
    let mut start = 0;
    for (n, (i, _)) in s.char_indices().enumerate() {
        if n > 0 && n % per_piece == 0 {
            out.push(&s[start..i]);
            start = i;
        }
    }
    out.push(&s[start..]);
    out
}

/// A fresh alphanumeric id of `len` characters (unique within the process, not secret).
fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
    });
    let mut state = seed
        ^ NEXT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ALPHABET[(z % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The current time as Ollama writes it: `2026-01-02T03:04:05.123456789Z`.
fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (days, secs) = (now.as_secs() / 86_400, now.as_secs() % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm), valid for any date after 1970.
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        now.subsec_nanos()
    )
}
