//! Talking to agents: send a message (a run starts), follow a session's events over SSE or a
//! WebSocket, abort a run, ask in one call.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::ws::{
    CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade, close_code,
};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, BoxStream, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::common::{ApiError, ApiJson, ApiQuery, ErrorEnvelope};
use crate::agent::events::{Event, SessionChannel, Subscription};
use crate::agent::{RunOutcome, StartError, StartedRun};
use crate::auth::CurrentUser;
use crate::auth::streams::StreamGuard;
use crate::store::Db;
use crate::store::sessions::{SessionRow, SessionWrite};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_message))
        .routes(routes!(events))
        .routes(routes!(abort))
        .routes(routes!(ask))
        .routes(routes!(ws))
        .routes(routes!(get_run))
}

/// A run as stored.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Run {
    pub id: String,
    pub session_id: String,
    /// `running`, `completed`, `aborted`, `max_steps`, `failed`, or `interrupted` (the host
    /// stopped during the run).
    pub status: String,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    pub steps: i64,
    #[schema(value_type = Object)]
    pub usage: Value,
    pub cost_usd: crate::agent::budget::Usd,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// One of your runs.
#[utoipa::path(get, path = "/api/runs/{id}", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Run), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get_run(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<axum::Json<Run>, ApiError> {
    let row = state
        .db()
        .get_run(user.id(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    Ok(axum::Json(Run {
        id: row.id,
        session_id: row.session_id,
        status: row.status,
        error: row.error,
        steps: row.steps,
        usage: row.usage,
        cost_usd: crate::agent::budget::Usd(row.cost_micros),
        started_at_ms: row.started_at_ms,
        finished_at_ms: row.finished_at_ms,
    }))
}

/// Longest message text accepted, in characters (as the document's `maxLength` counts).
const MAX_TEXT: usize = 256 * 1024;

/// A message to the session's agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// Not blank; at most 262144 characters.
    #[schema(pattern = r"\S", max_length = 262144)]
    pub text: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Answer when the run has finished, with its result, instead of `202` at once.
    #[serde(default)]
    pub wait: bool,
}

/// `202` body.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct RunStarted {
    pub run_id: String,
    pub session_id: String,
}

pub(super) fn start_error(e: StartError) -> ApiError {
    match e {
        StartError::Busy(_) => ApiError::new(StatusCode::CONFLICT, "run_active", e.to_string()),
        StartError::NoAgent => ApiError::new(StatusCode::CONFLICT, "no_agent", e.to_string()),
        StartError::NotFound => ApiError::not_found("session"),
        StartError::TooManyRuns(_) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_runs",
            e.to_string(),
        ),
        StartError::Budget(m) => ApiError::new(StatusCode::PAYMENT_REQUIRED, "budget_exceeded", m),
        StartError::Internal(e) => ApiError::from(e),
    }
}

fn check_text(text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("text: must not be empty"));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(ApiError::bad_request(format!(
            "text: at most {MAX_TEXT} characters"
        )));
    }
    Ok(())
}

pub(super) async fn session_of(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
) -> Result<SessionRow, ApiError> {
    state
        .db()
        .get_session(user.id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("session"))
}

pub(super) async fn wait_outcome(mut started: StartedRun) -> Result<Arc<RunOutcome>, ApiError> {
    loop {
        if let Some(outcome) = started.done.borrow().clone() {
            return Ok(outcome);
        }
        started
            .done
            .changed()
            .await
            .map_err(|_| ApiError::internal("the run's task ended without an outcome"))?;
    }
}

/// Sends a message: it is stored and a run starts. `202 {run_id}` at once; follow it on
/// `GET /api/sessions/{id}/events`. With `?wait=true`, answers when the run ended, with the
/// final text, tool calls, usage and step count. One run per session: a message while a run
/// is active is refused with `409 run_active` (not queued).
#[utoipa::path(post, path = "/api/sessions/{id}/messages", tag = "runs",
    params(("id" = String, Path), WaitQuery), request_body = NewMessage,
    responses((status = 202, body = RunStarted), (status = 200, body = RunOutcome, description = "with ?wait=true"),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 402, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
        (status = 429, body = ErrorEnvelope, description = "you have `max_runs_per_user` runs in progress")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn post_message(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<WaitQuery>,
    ApiJson(body): ApiJson<NewMessage>,
) -> Result<Response, ApiError> {
    check_text(&body.text)?;
    // The session is read (and its ownership checked) by `start`, alongside its other reads.
    let started = state
        .agent
        .start(user.id(), &id, body.text)
        .await
        .map_err(start_error)?;
    if query.wait {
        let outcome = wait_outcome(started).await?;
        return Ok(axum::Json(outcome.as_ref().clone()).into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(RunStarted {
            run_id: started.run_id,
            session_id: id,
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Same as the `Last-Event-ID` header, for clients that cannot set headers.
    pub last_event_id: Option<i64>,
}

fn last_event_id(headers: &HeaderMap, query: Option<i64>) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(query)
}

/// The events of a session, as they happen, in order, each with an `id`. Stays open across
/// runs. Reconnect with `Last-Event-ID` (or `?last_event_id=`) to get what was missed: the
/// stored boundary events and, for a run in progress, its buffered deltas — or a `snapshot`
/// of the text so far when the buffer no longer reaches back.
#[utoipa::path(get, path = "/api/sessions/{id}/events", tag = "runs",
    params(("id" = String, Path), EventsQuery),
    responses((status = 200, content_type = "text/event-stream", description = "run-start, text-delta, tool-call, tool-result, step-finish, finish, error, snapshot"),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 429, description = "`too_many_streams`: you have `http.max_streams_per_user` open", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn events(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let session = session_of(&state, &user, &id).await?;
    let guard = state.streams.open(&user)?;
    let channel = state.agent.channel(&session.id).await?;
    let after = last_event_id(&headers, query.last_event_id);
    let sub = channel.subscribe(after);
    let stream = follow(state.db().clone(), channel, sub, None).map(|e| Ok(sse(&e)));
    Ok(sse_response(guard.wrap(stream)))
}

pub(super) fn sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .event(e.kind.clone())
        .data(e.payload().to_string())
}

pub(super) fn sse_response(
    stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
) -> Response {
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies (nginx) buffer responses unless told not to, which would hold every delta back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Stored events read per query while replaying: a client far behind is caught up page by
/// page, never with its whole gap in memory.
const REPLAY_PAGE: i64 = 256;

struct Follow {
    db: Db,
    channel: Arc<SessionChannel>,
    sub: Subscription,
    page: std::vec::IntoIter<Arc<Event>>,
    backlog: std::vec::IntoIter<Arc<Event>>,
    run: Option<String>,
    done: bool,
}

impl Follow {
    /// The next stored event still to replay, reading the next page when one is used up.
    async fn next_stored(&mut self) -> anyhow::Result<Option<Arc<Event>>> {
        loop {
            if let Some(e) = self.page.next() {
                return Ok(Some(e));
            }
            let Some((after, before)) = self.sub.stored else {
                return Ok(None);
            };
            let rows = self
                .db
                .events_after(self.channel.session_id(), after, REPLAY_PAGE)
                .await?;
            let full = rows.len() as i64 == REPLAY_PAGE;
            let page: Vec<Arc<Event>> = rows
                .into_iter()
                .filter(|r| r.seq < before)
                .map(|r| {
                    Arc::new(Event {
                        seq: r.seq,
                        run_id: r.run_id,
                        kind: r.kind,
                        data: r.data,
                    })
                })
                .collect();
            self.sub.stored = match page.last() {
                Some(last) if full && last.seq + 1 < before => Some((last.seq, before)),
                _ => None,
            };
            self.page = page.into_iter();
        }
    }
}

/// The events of a subscription: the stored events it must replay, its backlog, then live
/// ones (skipping any already covered), resynchronising from storage if the subscriber fell
/// behind. With `run`, only that run's events, ending after its terminal one.
pub(super) fn follow(
    db: Db,
    channel: Arc<SessionChannel>,
    mut sub: Subscription,
    run: Option<String>,
) -> BoxStream<'static, Arc<Event>> {
    let backlog = std::mem::take(&mut sub.backlog).into_iter();
    let state = Follow {
        db,
        channel,
        sub,
        page: Vec::new().into_iter(),
        backlog,
        run,
        done: false,
    };
    stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let stored = match s.next_stored().await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "replaying stored events failed");
                    return None;
                }
            };
            let event = match stored.or_else(|| s.backlog.next()) {
                Some(e) => e,
                None => match s.sub.live.recv().await {
                    Ok(e) if e.seq <= s.sub.last_seq => continue,
                    Ok(e) => {
                        s.sub.last_seq = e.seq;
                        e
                    }
                    Err(RecvError::Lagged(_)) => {
                        let mut fresh = s.channel.subscribe(Some(s.sub.last_seq));
                        s.backlog = std::mem::take(&mut fresh.backlog).into_iter();
                        s.sub = fresh;
                        continue;
                    }
                    Err(RecvError::Closed) => return None,
                },
            };
            if let Some(run) = &s.run {
                if &event.run_id != run {
                    continue;
                }
                s.done = event.is_terminal();
            }
            return Some((event, s));
        }
    })
    .boxed()
}

/// `202` body of an abort.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct RunStopping {
    /// The run being stopped.
    pub run_id: String,
}

/// Stops the session's run at its next await point. What it produced so far is kept; the run
/// ends with a `finish` event whose status is `aborted`.
#[utoipa::path(post, path = "/api/sessions/{id}/abort", tag = "runs", params(("id" = String, Path)),
    responses((status = 202, body = RunStopping, description = "the run is stopping"), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope, description = "no run in progress")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn abort(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = session_of(&state, &user, &id).await?;
    match state.agent.abort(user.id(), &session.id).await? {
        Some(run_id) => {
            Ok((StatusCode::ACCEPTED, axum::Json(RunStopping { run_id })).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_active_run",
            "the session has no run in progress",
        )),
    }
}

/// A one-shot question.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    /// Not blank; at most 262144 characters.
    #[schema(pattern = r"\S", max_length = 262144)]
    pub text: String,
    /// Continue this session; default: a new one.
    pub session_id: Option<String>,
    /// Agent (name or id) for a new session; default: your default agent, or your only one.
    pub agent: Option<String>,
}

/// Asks an agent in one call and streams the run's events (SSE) until it ends. Creates a
/// session unless `session_id` names one; the session id is in the `x-kelp-session-id`
/// header and in the `run-start` event.
#[utoipa::path(post, path = "/api/ask", tag = "runs", request_body = Ask,
    responses((status = 200, content_type = "text/event-stream", description = "the run's events"),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 402, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
        (status = 429, description = "`too_many_runs` (you have `max_runs_per_user` runs in progress) or `too_many_streams` (you have `http.max_streams_per_user` open)", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn ask(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<Ask>,
) -> Result<Response, ApiError> {
    check_text(&body.text)?;
    // Taken before anything is created, so a refusal leaves no session or run behind.
    let guard = state.streams.open(&user)?;
    let (session, made) = match &body.session_id {
        Some(id) => (session_of(&state, &user, id).await?, false),
        None => {
            let agent_id = resolve_agent(&state, &user, body.agent.as_deref()).await?;
            state.agent.has_room(user.id()).await.map_err(start_error)?;
            let title = title_of(&body.text);
            (new_session(&state, &user, &agent_id, &title).await?, true)
        }
    };
    let channel = state.agent.channel(&session.id).await?;
    // Subscribed before the run starts, so its first event cannot be missed.
    let sub = channel.subscribe(None);
    let started = start_run(&state, &user, &session.id, body.text, made).await?;
    let stream =
        follow(state.db().clone(), channel, sub, Some(started.run_id)).map(|e| Ok(sse(&e)));
    let mut response = sse_response(guard.wrap(stream));
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert("x-kelp-session-id", v);
    }
    Ok(response)
}

/// Starts a run on the session; when the request made the session (`made`) and the run is
/// refused, the session goes again, so a refusal leaves nothing behind.
pub(super) async fn start_run(
    state: &AppState,
    user: &CurrentUser,
    session_id: &str,
    text: String,
    made: bool,
) -> Result<StartedRun, ApiError> {
    match state.agent.start(user.id(), session_id, text).await {
        Ok(started) => Ok(started),
        Err(e) => {
            if made {
                match state.db().delete_session(user.id(), session_id).await {
                    Ok(_) => super::sessions::remove_workspace(state, session_id).await,
                    Err(e) => {
                        tracing::warn!(session = %session_id, error = %format!("{e:#}"), "removing a session whose run was refused")
                    }
                }
            }
            Err(start_error(e))
        }
    }
}

pub(super) fn title_of(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    let mut title: String = line.chars().take(80).collect();
    if title.is_empty() {
        title = "New chat".into();
    }
    title
}

/// The agent a one-shot request means: by name or id, else the default agent setting, else
/// the user's only agent.
pub(super) async fn resolve_agent(
    state: &AppState,
    user: &CurrentUser,
    wanted: Option<&str>,
) -> Result<String, ApiError> {
    let db = state.db();
    let (agents, _) = db.list_agents(user.id(), 1000, 0).await?;
    if let Some(wanted) = wanted {
        return agents
            .iter()
            .find(|a| a.name == wanted || a.id == wanted)
            .map(|a| a.id.clone())
            .ok_or_else(|| ApiError::not_found("agent"));
    }
    let settings = db.user_settings(user.id()).await?;
    if let Some(default) = settings.get("default_agent_id").and_then(Value::as_str)
        && agents.iter().any(|a| a.id == default)
    {
        return Ok(default.to_owned());
    }
    match agents.as_slice() {
        [only] => Ok(only.id.clone()),
        [] => Err(ApiError::bad_request(
            "you have no agent yet: create one with POST /api/agents",
        )),
        _ => Err(ApiError::bad_request(
            "agent: you have several agents; name one (or set default_agent_id in your settings)",
        )),
    }
}

pub(super) async fn new_session(
    state: &AppState,
    user: &CurrentUser,
    agent_id: &str,
    title: &str,
) -> Result<SessionRow, ApiError> {
    match state
        .db()
        .create_session(user.id(), Some(agent_id), title)
        .await?
    {
        SessionWrite::Done(row) => {
            state
                .runtime
                .session_workspace(&row.id)
                .map_err(ApiError::internal)?;
            Ok(row)
        }
        _ => Err(ApiError::not_found("agent")),
    }
}

/// A WebSocket carrying the events of the sessions a client subscribes to. Send
/// `{"type":"subscribe","session_id":"…","last_event_id":N}` (the id is optional) or
/// `{"type":"unsubscribe","session_id":"…"}`; receive
/// `{"type":"event","session_id","id","event","data"}` and `{"type":"error","message"}`.
///
/// The socket closes (code 1008) when the credential it was opened with stops being valid.
#[utoipa::path(get, path = "/api/ws", tag = "runs",
    responses((status = 101, description = "switching to the WebSocket protocol"),
        (status = 400, description = "not a WebSocket handshake: `Connection: upgrade`, `Upgrade: websocket` or a `Sec-WebSocket-*` header is missing or wrong", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, description = "`cross_origin`: opened from another site's page", body = ErrorEnvelope),
        (status = 429, description = "`too_many_streams`: you have `http.max_streams_per_user` open", body = ErrorEnvelope)),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn ws(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // A browser lets any page open a WebSocket to any server, with that server's cookies, and
    // the handshake is a GET that the cookie's CSRF check lets through; what tells another
    // site's page apart is the `Origin` every browser sends on it. Clients that are not
    // browsers send none.
    if headers.contains_key(header::ORIGIN) && !crate::auth::same_origin(&headers, &state) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "WebSockets must be opened from this server's own origin",
        ));
    }
    let guard = state.streams.open(&user)?;
    Ok(upgrade.on_upgrade(move |socket| ws_session(state, user, guard, socket)))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum WsCommand {
    Subscribe {
        session_id: String,
        last_event_id: Option<i64>,
    },
    Unsubscribe {
        session_id: String,
    },
}

/// Sessions one WebSocket may follow at once. Each holds a channel on the host; a socket takes
/// one of its user's stream slots, so without a bound one slot could hold any number.
const MAX_WS_SUBSCRIPTIONS: usize = 64;

async fn ws_session(state: AppState, user: CurrentUser, guard: StreamGuard, mut socket: WebSocket) {
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Value>(256);
    let mut forwarders: std::collections::HashMap<String, tokio::task::JoinHandle<()>> =
        Default::default();
    loop {
        tokio::select! {
            _ = guard.closed() => {
                let close = CloseFrame {
                    code: close_code::POLICY,
                    reason: "signed out: the credential this socket was opened with is no longer valid".into(),
                };
                let _ = socket.send(WsMessage::Close(Some(close))).await;
                break;
            }
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let reply = match serde_json::from_str::<WsCommand>(&text) {
                    Err(e) => Some(json!({"type": "error", "message": format!("bad command: {e}")})),
                    Ok(WsCommand::Unsubscribe { session_id }) => {
                        if let Some(task) = forwarders.remove(&session_id) { task.abort(); }
                        None
                    }
                    Ok(WsCommand::Subscribe { session_id, .. })
                        if !forwarders.contains_key(&session_id) && {
                            forwarders.retain(|_, task| !task.is_finished());
                            forwarders.len() >= MAX_WS_SUBSCRIPTIONS
                        } =>
                    {
                        Some(json!({"type": "error", "session_id": session_id,
                            "message": format!("at most {MAX_WS_SUBSCRIPTIONS} sessions per WebSocket; unsubscribe from one first")}))
                    }
                    Ok(WsCommand::Subscribe { session_id, last_event_id }) => {
                        match subscribe_ws(&state, &user, &session_id, last_event_id, out_tx.clone()).await {
                            Ok(task) => {
                                if let Some(old) = forwarders.insert(session_id, task) { old.abort(); }
                                None
                            }
                            Err(e) => Some(json!({"type": "error", "session_id": session_id, "message": e.message})),
                        }
                    }
                };
                if let Some(reply) = reply
                    && socket.send(WsMessage::Text(reply.to_string().into())).await.is_err()
                {
                    break;
                }
            }
            Some(out) = out_rx.recv() => {
                if socket.send(WsMessage::Text(out.to_string().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    for task in forwarders.into_values() {
        task.abort();
    }
}

async fn subscribe_ws(
    state: &AppState,
    user: &CurrentUser,
    session_id: &str,
    last_event_id: Option<i64>,
    out: tokio::sync::mpsc::Sender<Value>,
) -> Result<tokio::task::JoinHandle<()>, ApiError> {
    let session = session_of(state, user, session_id).await?;
    let channel = state.agent.channel(&session.id).await?;
    let sub = channel.subscribe(last_event_id);
    let mut events = follow(state.db().clone(), channel, sub, None);
    let session_id = session.id;
    Ok(tokio::spawn(async move {
        while let Some(e) = events.next().await {
            let message = json!({
                "type": "event",
                "session_id": session_id,
                "id": e.seq,
                "event": e.kind,
                "data": e.payload(),
            });
            if out.send(message).await.is_err() {
                break;
            }
        }
    }))
}
