//! A fake Telegram Bot API server on a loopback port, for the channel tests and benchmarks.
//!
//! It speaks the Bot API's wire format (`tests/fixtures/telegram/`): every answer is the
//! `{"ok": true, "result": …}` envelope, every refusal `{"ok": false, "error_code": N,
//! "description": …, "parameters"?: …}` with HTTP status N, as the real server sends them.
//! Updates are injected by the test and handed out by `getUpdates` (long polling: a poll
//! with nothing to give waits up to its `timeout`); each is confirmed — and forgotten — by a
//! later poll whose `offset` is past it, as Telegram does. Every call is recorded. Failures
//! are scripted per method: a 429 with `retry_after`, a 403 for a blocked bot, "can't parse
//! entities", the two 409s, a chat migrated to a supergroup, or a slow answer.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

/// The bot the fake answers as.
pub const BOT_ID: i64 = 7_000_001;
pub const BOT_USERNAME: &str = "kelp_test_bot";

/// One call the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// The parameters, from the JSON body, a form body or the query.
    pub params: Value,
    pub at: Instant,
}

/// A scripted failure for the next call of a method.
#[derive(Debug, Clone)]
pub enum Failure {
    /// 429 `Too Many Requests: retry after N` with `parameters.retry_after`.
    RetryAfter(u32),
    /// 403 `Forbidden: bot was blocked by the user`.
    Blocked,
    /// 400 `Bad Request: can't parse entities: …`.
    CantParse,
    /// 400 with `parameters.migrate_to_chat_id`.
    Migrated(i64),
    /// 409 `Conflict: terminated by other getUpdates request; …`.
    OtherPoller,
    /// Any status and description.
    Status(u16, String),
    /// Answers normally after this wait.
    Slow(Duration),
}

#[derive(Default)]
struct State_ {
    token: String,
    /// Updates not yet confirmed, in order.
    updates: VecDeque<Value>,
    next_update_id: i64,
    calls: Vec<Call>,
    failures: HashMap<String, VecDeque<Failure>>,
    next_message_id: i64,
    /// The current text of each sent message, by (chat, message id).
    messages: HashMap<(String, i64), String>,
    webhook: Option<(String, Option<String>)>,
    /// Polls in flight, by a number of their own: a newer poll ends the older one with 409.
    polls: Vec<(u64, oneshot::Sender<()>)>,
    poll_seq: u64,
    /// Polls ended by a newer one (answered 409, as two pollers of one bot are).
    polls_cut: usize,
    /// Files users sent, by file id: the path getFile names, and the bytes.
    files: HashMap<String, (String, Vec<u8>)>,
}

struct Shared {
    state: Mutex<State_>,
    /// Woken when an update arrives.
    arrived: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A fake Bot API server; stops when dropped.
pub struct FakeTelegram {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

impl FakeTelegram {
    /// Starts a fake that accepts `token` (others get the real server's 404).
    pub async fn start(token: &str) -> FakeTelegram {
        let shared = Arc::new(Shared {
            state: Mutex::new(State_ {
                token: token.to_owned(),
                next_update_id: 100_000,
                next_message_id: 1,
                ..Default::default()
            }),
            arrived: Notify::new(),
        });
        let app = Router::new()
            .route("/{bot}/{method}", any(receive))
            .route("/file/{bot}/{*path}", any(download))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the fake Telegram");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .ok();
        });
        FakeTelegram {
            addr,
            shared,
            _stop: stop,
        }
    }

    /// Makes a file users can send by `file_id`, downloadable as the Bot API serves files.
    pub fn add_file(&self, file_id: &str, bytes: &[u8]) {
        let mut state = self.shared.lock();
        let path = format!("documents/file_{}.txt", state.files.len());
        state
            .files
            .insert(file_id.to_owned(), (path, bytes.to_vec()));
    }

    /// What the plugin's `api_base` is set to.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues an update (its `update_id` is given by the fake, in order) and returns its id.
    pub fn push_update(&self, mut update: Value) -> i64 {
        let id = {
            let mut state = self.shared.lock();
            let id = state.next_update_id;
            state.next_update_id += 1;
            update["update_id"] = json!(id);
            state.updates.push_back(update);
            id
        };
        self.shared.arrived.notify_waiters();
        id
    }

    /// Queues an update as given, `update_id` included (a recorded batch's).
    pub fn push_raw(&self, update: Value) {
        {
            let mut state = self.shared.lock();
            let id = update["update_id"].as_i64().unwrap_or(0);
            state.next_update_id = state.next_update_id.max(id + 1);
            state.updates.push_back(update);
        }
        self.shared.arrived.notify_waiters();
    }

    /// Queues a private-chat text message from user `from` (its chat id is the user's id).
    pub fn push_private_text(&self, from: i64, text: &str) -> i64 {
        self.push_update(private_text(from, text))
    }

    /// Scripts the next call of `method` to fail.
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.shared
            .lock()
            .failures
            .entry(method.to_owned())
            .or_default()
            .push_back(failure);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// The text of each message sent to `chat`, as it stands after edits, in order.
    pub fn texts_in(&self, chat: i64) -> Vec<String> {
        let state = self.shared.lock();
        let mut sent: Vec<(i64, String)> = state
            .messages
            .iter()
            .filter(|((c, _), _)| *c == chat.to_string())
            .map(|((_, id), text)| (*id, text.clone()))
            .collect();
        sent.sort();
        sent.into_iter().map(|(_, text)| text).collect()
    }

    /// How many polls a newer poll cut short (each answered 409): more than one poller.
    pub fn polls_cut(&self) -> usize {
        self.shared.lock().polls_cut
    }

    /// Updates not confirmed yet.
    pub fn unconfirmed(&self) -> usize {
        self.shared.lock().updates.len()
    }

    /// The webhook URL and secret token set, if any.
    pub fn webhook(&self) -> Option<(String, Option<String>)> {
        self.shared.lock().webhook.clone()
    }
}

/// A private-chat text message Update (without its `update_id`), shaped like the fixture
/// `update-private-text-message.json`.
/// A document `from` sends in a private chat, with a caption.
pub fn private_document(from: i64, file_id: &str, name: &str, size: usize, caption: &str) -> Value {
    let mut update = private_text(from, "");
    let message = update["message"].as_object_mut().unwrap();
    message.remove("text");
    message.insert("caption".into(), caption.into());
    message.insert(
        "document".into(),
        json!({"file_id": file_id, "file_unique_id": format!("u-{file_id}"), "file_name": name,
               "mime_type": "text/plain", "file_size": size}),
    );
    update
}

pub fn private_text(from: i64, text: &str) -> Value {
    let mut update = json!({
        "message": {
            "message_id": 1,
            "from": {"id": from, "is_bot": false, "first_name": "Test", "username": format!("user{from}"), "language_code": "en"},
            "chat": {"id": from, "first_name": "Test", "username": format!("user{from}"), "type": "private"},
            "date": 1_700_000_000,
            "text": text,
        }
    });
    // Telegram marks a leading `/command` with a bot_command entity, in UTF-16 units.
    if let Some(command) = text.strip_prefix('/') {
        let length = 1 + command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .encode_utf16()
            .count();
        update["message"]["entities"] =
            json!([{"type": "bot_command", "offset": 0, "length": length}]);
    }
    update
}

fn ok(result: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        json!({"ok": true, "result": result}).to_string(),
    )
        .into_response()
}

fn refuse(code: u16, description: &str, parameters: Option<Value>) -> Response {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A call's parameters: the URL's query and the body (JSON, or a form) together, as the Bot
/// API server reads them.
fn params(body: &Bytes, query: Option<&str>) -> Value {
    let mut out = serde_json::Map::new();
    let json = serde_json::from_slice::<Value>(body).ok();
    let form = match &json {
        Some(Value::Object(fields)) => {
            out.extend(fields.clone());
            ""
        }
        _ => std::str::from_utf8(body).unwrap_or_default(),
    };
    for text in [query.unwrap_or_default(), form] {
        let Ok(url) = reqwest::Url::parse(&format!("http://fake/?{text}")) else {
            continue;
        };
        for (k, v) in url.query_pairs() {
            // Telegram reads JSON-looking form values (reply_markup, numbers) as JSON.
            let value = serde_json::from_str(&v).unwrap_or(Value::String(v.into_owned()));
            out.insert(k.into_owned(), value);
        }
    }
    Value::Object(out)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let params = params(&body, query.as_deref());
    let failure = {
        let mut state = shared.lock();
        state.calls.push(Call {
            method: method.clone(),
            params: params.clone(),
            at: Instant::now(),
        });
        if bot.strip_prefix("bot") != Some(state.token.as_str()) {
            // What the real server answers a token it does not know.
            return refuse(404, "Not Found", None);
        }
        state
            .failures
            .get_mut(&method)
            .and_then(VecDeque::pop_front)
    };
    match failure {
        Some(Failure::RetryAfter(s)) => {
            return refuse(
                429,
                &format!("Too Many Requests: retry after {s}"),
                Some(json!({"retry_after": s})),
            );
        }
        Some(Failure::Blocked) => {
            return refuse(403, "Forbidden: bot was blocked by the user", None);
        }
        Some(Failure::CantParse) => {
            return refuse(
                400,
                "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 0",
                None,
            );
        }
        Some(Failure::Migrated(to)) => {
            return refuse(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                Some(json!({"migrate_to_chat_id": to})),
            );
        }
        Some(Failure::OtherPoller) => {
            return refuse(
                409,
                "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                None,
            );
        }
        Some(Failure::Status(code, description)) => return refuse(code, &description, None),
        Some(Failure::Slow(wait)) => tokio::time::sleep(wait).await,
        None => {}
    }
    match method.as_str() {
        "getMe" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Kelp", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false,
        })),
        "deleteWebhook" => {
            shared.lock().webhook = None;
            ok(json!(true))
        }
        "setWebhook" => {
            let url = as_text(&params["url"]);
            let secret = params.get("secret_token").map(as_text);
            shared.lock().webhook = Some((url, secret));
            ok(json!(true))
        }
        "getUpdates" => get_updates(&shared, &params).await,
        "sendMessage" => send_message(&shared, &params),
        "editMessageText" => edit_message(&shared, &params),
        "sendChatAction" | "answerCallbackQuery" => ok(json!(true)),
        "getFile" => {
            let id = as_text(&params["file_id"]);
            match shared.lock().files.get(&id) {
                Some((path, bytes)) => ok(json!({
                    "file_id": id, "file_unique_id": format!("u-{id}"),
                    "file_size": bytes.len(), "file_path": path,
                })),
                None => refuse(400, "Bad Request: invalid file_id", None),
            }
        }
        _ => refuse(404, "Not Found: method not found", None),
    }
}

/// `GET /file/bot<token>/<file_path>`: a file's bytes, as the Bot API's file server gives
/// them (a plain 404 for a wrong token or path).
async fn download(
    State(shared): State<Arc<Shared>>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    let state = shared.lock();
    if bot.strip_prefix("bot") != Some(state.token.as_str()) {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    match state.files.values().find(|(p, _)| *p == path) {
        Some((_, bytes)) => (
            StatusCode::OK,
            [("content-type", "application/octet-stream")],
            bytes.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

async fn get_updates(shared: &Arc<Shared>, params: &Value) -> Response {
    let offset = params["offset"]
        .as_i64()
        .or_else(|| params["offset"].as_str().and_then(|s| s.parse().ok()));
    let timeout = params["timeout"]
        .as_u64()
        .or_else(|| params["timeout"].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0);
    let (me, mut ended) = {
        let mut state = shared.lock();
        if state.webhook.is_some() {
            return refuse(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
                None,
            );
        }
        // A newer poll ends the ones in flight, as the real server does.
        let older: Vec<_> = state.polls.drain(..).collect();
        state.polls_cut += older.len();
        for (_, older) in older {
            let _ = older.send(());
        }
        state.poll_seq += 1;
        let me = state.poll_seq;
        let (end, ended) = oneshot::channel();
        state.polls.push((me, end));
        (me, ended)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout.min(50));
    loop {
        let arrived = shared.arrived.notified();
        {
            let mut state = shared.lock();
            if let Some(offset) = offset {
                // Confirmed: forgotten for good.
                state
                    .updates
                    .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            }
            if !state.updates.is_empty() || tokio::time::Instant::now() >= deadline {
                state.polls.retain(|(seq, _)| *seq != me);
                let batch: Vec<Value> = state.updates.iter().take(100).cloned().collect();
                return ok(Value::Array(batch));
            }
        }
        tokio::select! {
            _ = arrived => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = &mut ended => {
                return refuse(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                    None,
                );
            }
        }
    }
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// The text as Telegram shows it: for HTML, without its tags and with entities decoded; a
/// tag the server does not know, or an unclosed one, is refused as the server refuses it.
fn visible_text(text: &str, parse_mode: Option<&str>) -> Result<String, String> {
    if parse_mode != Some("HTML") {
        return Ok(text.to_owned());
    }
    let allowed = [
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "code",
        "pre",
        "a",
        "blockquote",
        "tg-spoiler",
        "span",
    ];
    let mut out = String::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find('>') else {
            return Err("Unclosed start tag".into());
        };
        let tag = &rest[at + 1..at + end];
        let (closing, name) = match tag.strip_prefix('/') {
            Some(n) => (true, n.trim()),
            None => (false, tag.split_whitespace().next().unwrap_or("")),
        };
        if !allowed.contains(&name) {
            return Err(format!("Unsupported start tag \"{name}\""));
        }
        if closing {
            if open.pop().as_deref() != Some(name) {
                return Err(format!("Unmatched end tag \"{name}\""));
            }
        } else {
            open.push(name.to_owned());
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    if let Some(name) = open.pop() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{name}\""
        ));
    }
    Ok(out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&"))
}

fn cant_parse(why: &str) -> Response {
    refuse(
        400,
        &format!("Bad Request: can't parse entities: {why}"),
        None,
    )
}

fn send_message(shared: &Arc<Shared>, params: &Value) -> Response {
    let chat = as_text(&params["chat_id"]);
    let text = as_text(&params["text"]);
    let visible = match visible_text(&text, params["parse_mode"].as_str()) {
        Ok(v) => v,
        Err(why) => return cant_parse(&why),
    };
    if visible.trim().is_empty() {
        return refuse(400, "Bad Request: message text is empty", None);
    }
    if utf16_len(&visible) > 4096 {
        return refuse(400, "Bad Request: message is too long", None);
    }
    let mut state = shared.lock();
    let id = state.next_message_id;
    state.next_message_id += 1;
    state.messages.insert((chat.clone(), id), visible.clone());
    ok(message(&chat, id, &visible))
}

fn edit_message(shared: &Arc<Shared>, params: &Value) -> Response {
    let chat = as_text(&params["chat_id"]);
    let Some(id) = params["message_id"]
        .as_i64()
        .or_else(|| params["message_id"].as_str().and_then(|s| s.parse().ok()))
    else {
        return refuse(
            400,
            "Bad Request: message identifier is not specified",
            None,
        );
    };
    let text = as_text(&params["text"]);
    let visible = match visible_text(&text, params["parse_mode"].as_str()) {
        Ok(v) => v,
        Err(why) => return cant_parse(&why),
    };
    if utf16_len(&visible) > 4096 {
        return refuse(400, "Bad Request: MESSAGE_TOO_LONG", None);
    }
    let mut state = shared.lock();
    match state.messages.get_mut(&(chat.clone(), id)) {
        None => refuse(400, "Bad Request: message to edit not found", None),
        Some(current) if *current == visible => refuse(
            400,
            "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
            None,
        ),
        Some(current) => {
            *current = visible.clone();
            ok(message(&chat, id, &visible))
        }
    }
}

fn message(chat: &str, id: i64, text: &str) -> Value {
    let chat_id: Value = chat.parse::<i64>().map(Value::from).unwrap_or(json!(chat));
    json!({
        "message_id": id,
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "Kelp", "username": BOT_USERNAME},
        "chat": {"id": chat_id, "type": "private"},
        "date": 1_700_000_000,
        "text": text,
    })
}

/// A Telegram channel of the admin's made in-process: the real Telegram plugin installed
/// against `fake` (its token set), bound to `agent_id` with `access`, not started. Its id.
pub async fn telegram_channel(
    s: &crate::server::TestServer,
    mgr: &kelp::channels::ChannelManager,
    fake: &FakeTelegram,
    admin: &str,
    agent_id: &str,
    access: kelp::channels::Access,
) -> String {
    use kelp::plugins::InstallOptions;
    use kelp::plugins::grants::Approval;
    let (_, me) = s.send("GET", "/api/me", Some(admin), None).await;
    let mut approval = Approval::default();
    approval.add_item("kv").unwrap();
    approval
        .add_item(&format!("http-private:{}", fake.addr()))
        .unwrap();
    let installed = s
        .state
        .runtime
        .install(
            &crate::pack(
                &crate::manifest(crate::components::PLUGIN_TELEGRAM_MANIFEST),
                crate::components::PLUGIN_TELEGRAM_WASM,
            ),
            InstallOptions {
                instance_id: None,
                config: json!({"api_base": fake.api_base()}),
                approval,
                approve_changes: false,
            },
        )
        .await
        .unwrap();
    let token = fake.shared.lock().token.clone();
    s.state
        .runtime
        .set_secret(&installed.instance_id, "BOT_TOKEN", &token)
        .await
        .unwrap();
    mgr.create(
        me["id"].as_str().unwrap(),
        kelp::channels::NewChannel {
            instance_id: installed.instance_id,
            agent_id: agent_id.to_owned(),
            mode: None,
            access,
            allowlist: Vec::new(),
            groups_need_address: true,
        },
    )
    .await
    .unwrap()
    .id
}

/// On a real `kelp serve` at `base` with no users yet: the first admin, the `openai` provider
/// pointed at `vendor_url`, an agent `helper`, and an open Telegram channel of the built-in
/// plugin polling `fake`, made through the API. The admin's token.
pub async fn serve_with_channel(base: &str, fake: &FakeTelegram, vendor_url: &str) -> String {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let call = async |token: Option<&str>, method: &str, path: &str, body: Value| {
        let mut req = http.request(method.parse().unwrap(), format!("{base}{path}"));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.json(&body).send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    };
    let setup = call(
        None,
        "POST",
        "/api/auth/setup",
        json!({"username": "admin", "password": "correct horse"}),
    )
    .await;
    let token = setup["token"].as_str().unwrap().to_owned();
    let auth = json!({"api_key": "sk-test", "base_url": vendor_url});
    call(Some(&token), "PUT", "/api/providers/openai/auth", auth).await;
    let agent = json!({"name": "helper", "provider": {"plugin": "openai", "model": "gpt-4o", "max_tokens": 50}});
    let agent = call(Some(&token), "POST", "/api/agents", agent).await;
    let channel = json!({
        "plugin": "kelp/telegram",
        "agent_id": agent["id"],
        "config": {"api_base": fake.api_base()},
        "secrets": {"BOT_TOKEN": fake.shared.lock().token.clone()},
        "grants": [format!("http-private:{}", fake.addr())],
        "access": "open",
    });
    let channel = call(Some(&token), "POST", "/api/channels", channel).await;
    assert_eq!(channel["running"], true, "{channel}");
    token
}
