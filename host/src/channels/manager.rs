//! The channel manager: runs each channel an operator started, on exactly one host at a
//! time (a lease in the database), polls its platform, stores what comes in exactly once,
//! and answers each message with the channel's agent.
//!
//! A channel's task owns its poll loop; dropping its [`Running`] entry (stop, shutdown, or the
//! manager going away) cancels the task, and the task gives its lease up as it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::model::{
    Action, ChannelError, Chat, Event, EventKind, Message, Outbound, Outcome, Setup, TextFormat,
};
use crate::agent::AgentHost;
use crate::plugins::{ChannelInfo, PluginRuntime};
use crate::store::Db;
use crate::store::channels::{ChannelRow, ChatRow};

/// How a channel runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelSettings {
    /// How long a poll asks the platform to hold the request when nothing is waiting.
    pub poll_wait_s: u32,
    /// How long a host's hold on a channel lasts without renewal (it renews every poll).
    pub lease_s: u64,
    /// How long a pairing code holds.
    pub pairing_ttl_s: u64,
    /// The first wait after a failed poll; it doubles up to a minute.
    pub retry_ms: u64,
    /// The address platforms reach this server at (`https://kelp.example.com`), for
    /// channels in webhook mode: the host registers `{public_url}/hooks/channels/{id}` with
    /// the platform when the channel starts. Unset: register the hook URL yourself.
    pub public_url: Option<String>,
    /// How many chats of one channel are answered at once (never more than the owner's
    /// `agent.max_runs_per_user`: every answer is one of the owner's runs).
    pub concurrent_chats: u32,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        ChannelSettings {
            poll_wait_s: 25,
            lease_s: 90,
            pairing_ttl_s: 3600,
            retry_ms: 1000,
            public_url: None,
            concurrent_chats: 8,
        }
    }
}

/// Who may talk to a channel's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// An unknown chat gets a one-time code; the owner approves it (the default).
    Pairing,
    /// Only the listed sender ids.
    Allowlist,
    /// Anyone who finds the bot.
    Open,
    /// No one: messages are dropped.
    Disabled,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Pairing => "pairing",
            Access::Allowlist => "allowlist",
            Access::Open => "open",
            Access::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Access {
        match s {
            "allowlist" => Access::Allowlist,
            "open" => Access::Open,
            "disabled" => Access::Disabled,
            // Unknown reads as the strictest that still lets the owner in.
            _ => Access::Pairing,
        }
    }
}

/// What makes a channel.
#[derive(Debug, Clone)]
pub struct NewChannel {
    /// An installed channel plugin's instance: its config and secrets are the bot's.
    pub instance_id: String,
    pub agent_id: String,
    /// How events arrive; `None`: the first the plugin names.
    pub mode: Option<super::model::Mode>,
    pub access: Access,
    pub allowlist: Vec<String>,
    /// In groups, answer only messages addressed to the bot.
    pub groups_need_address: bool,
}

/// What an operator changes of a channel; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct ChannelChange {
    pub agent_id: Option<String>,
    pub mode: Option<super::model::Mode>,
    pub access: Option<Access>,
    pub allowlist: Option<Vec<String>>,
    pub groups_need_address: Option<bool>,
}

fn mode_name(mode: super::model::Mode) -> &'static str {
    match mode {
        super::model::Mode::Poll => "poll",
        super::model::Mode::Webhook => "webhook",
    }
}

/// A channel task and what ends it.
struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Runs this host's share of the channels.
pub struct ChannelManager {
    pub(super) runtime: Arc<PluginRuntime>,
    pub(super) agent: Arc<AgentHost>,
    pub(super) settings: ChannelSettings,
    host_id: String,
    running: Mutex<HashMap<String, Running>>,
    /// Wakes a webhook-mode channel's task when a delivery was stored; one per task.
    wakers: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

/// Why a webhook delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRefusal {
    #[error("no such channel")]
    NotFound,
    /// Stopped, or its plugin not loaded: the platform should deliver again later.
    #[error("{0}")]
    Unavailable(String),
    /// The signature header is missing or wrong.
    #[error("{0}")]
    Forbidden(String),
    /// The plugin could not read the delivery.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ChannelManager {
    pub fn new(
        runtime: Arc<PluginRuntime>,
        agent: Arc<AgentHost>,
        settings: ChannelSettings,
        host_id: String,
    ) -> Arc<ChannelManager> {
        Arc::new(ChannelManager {
            runtime,
            agent,
            settings,
            host_id,
            running: Mutex::new(HashMap::new()),
            wakers: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a webhook delivery to channel `id`: checked (by the plugin's `webhook-auth`),
    /// read by the plugin, its events stored (those not stored before), and the channel's
    /// task woken to handle them. Returns what to answer the platform; it is answered only
    /// once the events are stored.
    pub async fn receive_webhook(
        &self,
        id: &str,
        request: crate::net::OutboundRequest,
    ) -> Result<super::model::WebhookBatch, WebhookRefusal> {
        let channel = self
            .db()
            .get_channel(id)
            .await?
            .ok_or(WebhookRefusal::NotFound)?;
        if !channel.running {
            return Err(WebhookRefusal::Unavailable("the channel is stopped".into()));
        }
        let batch = match self
            .runtime
            .channel_webhook(&channel.instance_id, request)
            .await
        {
            Ok(batch) => batch,
            Err(ChannelError::Unauthorized(why)) => return Err(WebhookRefusal::Forbidden(why)),
            Err(ChannelError::Invalid(why)) => return Err(WebhookRefusal::Invalid(why)),
            Err(e) => return Err(WebhookRefusal::Unavailable(e.to_string())),
        };
        let events: Vec<(String, String)> = batch
            .events
            .iter()
            .map(|e| Ok((e.id.clone(), serde_json::to_string(e)?)))
            .collect::<Result<_>>()?;
        self.db()
            .store_channel_events(id, &events, batch.kv.as_ref())
            .await?;
        if let Some(waker) = self.wakers.lock().expect("wakers lock").get(id) {
            waker.notify_one();
        }
        Ok(batch)
    }

    fn waker(&self, id: &str) -> Arc<tokio::sync::Notify> {
        self.wakers
            .lock()
            .expect("wakers lock")
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// How many chats of a channel are answered at once: the setting, within the owner's
    /// run limit so the channel never refuses itself.
    fn concurrent_chats(&self) -> usize {
        self.settings
            .concurrent_chats
            .clamp(1, self.agent.max_runs_per_user()) as usize
    }

    pub(super) fn db(&self) -> &Db {
        self.runtime.db()
    }

    /// Makes a channel of `owner_id`'s: the instance must be a loaded channel plugin not
    /// used by another channel, and the agent one of the owner's. It does not start.
    pub async fn create(&self, owner_id: &str, new: NewChannel) -> Result<ChannelRow> {
        let info = self.runtime.channel_info(&new.instance_id).ok_or_else(|| {
            anyhow!(
                "plugin instance `{}` is not a loaded channel plugin",
                new.instance_id
            )
        })?;
        if self
            .db()
            .get_agent(owner_id, &new.agent_id)
            .await?
            .is_none()
        {
            bail!("no agent `{}` of yours", new.agent_id);
        }
        let mode = match new.mode {
            Some(mode) if info.modes.contains(&mode) => mode,
            Some(mode) => bail!("the plugin cannot receive events by {mode:?}"),
            None => *info
                .modes
                .first()
                .ok_or_else(|| anyhow!("the plugin names no way to receive events"))?,
        };
        let row = ChannelRow {
            id: crate::util::new_id(),
            owner_id: owner_id.to_owned(),
            instance_id: new.instance_id,
            agent_id: new.agent_id,
            mode: mode_name(mode).to_owned(),
            access: new.access.as_str().to_owned(),
            allowlist: new.allowlist,
            groups_need_address: new.groups_need_address,
            running: false,
            poll_cursor: None,
            bot_json: None,
            last_error: None,
            last_activity_ms: None,
            created_at_ms: crate::store::now_ms(),
        };
        self.db()
            .create_channel(&row)
            .await
            .context("storing the channel (is the instance used by another channel?)")?;
        Ok(row)
    }

    /// Changes channel `id` to `change` (agent, mode, access): a running channel takes it from
    /// its next poll, and sets the platform up again for a new mode. Checked as `create`
    /// checks; `None` if there is no such channel.
    pub async fn update(&self, id: &str, change: ChannelChange) -> Result<Option<ChannelRow>> {
        let Some(mut row) = self.db().get_channel(id).await? else {
            return Ok(None);
        };
        if let Some(agent_id) = change.agent_id {
            if self
                .db()
                .get_agent(&row.owner_id, &agent_id)
                .await?
                .is_none()
            {
                bail!("no agent `{agent_id}` of yours");
            }
            row.agent_id = agent_id;
        }
        if let Some(mode) = change.mode {
            let info = self.runtime.channel_info(&row.instance_id).ok_or_else(|| {
                anyhow!(
                    "plugin instance `{}` is not a loaded channel plugin",
                    row.instance_id
                )
            })?;
            if !info.modes.contains(&mode) {
                bail!("the plugin cannot receive events by {mode:?}");
            }
            row.mode = mode_name(mode).to_owned();
        }
        if let Some(access) = change.access {
            row.access = access.as_str().to_owned();
        }
        if let Some(allowlist) = change.allowlist {
            row.allowlist = allowlist;
        }
        if let Some(groups) = change.groups_need_address {
            row.groups_need_address = groups;
        }
        if !self.db().update_channel(&row).await? {
            return Ok(None);
        }
        // A webhook-mode task waits to be woken: wake it, so a new mode is taken at once.
        if let Some(waker) = self.wakers.lock().expect("wakers lock").get(id) {
            waker.notify_one();
        }
        self.db().get_channel(id).await
    }

    /// Starts channel `id` (and marks it to start again after a restart).
    pub async fn start(self: &Arc<Self>, id: &str) -> Result<()> {
        if !self.db().set_channel_running(id, true).await? {
            bail!("no channel `{id}`");
        }
        self.spawn(id);
        Ok(())
    }

    /// Stops channel `id` on every host: it is marked stopped, and this host's task ends.
    pub async fn stop(&self, id: &str) -> Result<()> {
        if !self.db().set_channel_running(id, false).await? {
            bail!("no channel `{id}`");
        }
        let running = self.running.lock().expect("running lock").remove(id);
        if let Some(mut running) = running {
            running.cancel.cancel();
            let _ = (&mut running.task).await;
        }
        Ok(())
    }

    /// Starts a task for every channel marked running (at start, after a restart). Each
    /// polls only while this host holds its lease.
    pub async fn resume(self: &Arc<Self>) -> Result<usize> {
        let channels = self.db().running_channels().await?;
        for channel in &channels {
            self.spawn(&channel.id);
        }
        Ok(channels.len())
    }

    /// Ends every channel task of this host and gives their leases up.
    pub async fn shutdown(&self) {
        let running: Vec<Running> = self
            .running
            .lock()
            .expect("running lock")
            .drain()
            .map(|(_, r)| r)
            .collect();
        for mut running in running {
            running.cancel.cancel();
            let _ = (&mut running.task).await;
        }
    }

    /// Approves a pending chat of one of `owner_id`'s channels by its code.
    pub async fn approve(&self, owner_id: &str, code: &str) -> Result<Option<ChatRow>> {
        self.db().approve_pairing(owner_id, code.trim()).await
    }

    fn spawn(self: &Arc<Self>, id: &str) {
        let mut running = self.running.lock().expect("running lock");
        if running.get(id).is_some_and(|r| !r.task.is_finished()) {
            return;
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(self.clone(), id.to_owned(), cancel.clone()));
        running.insert(id.to_owned(), Running { cancel, task });
    }

    async fn note_error(&self, id: &str, error: &str) {
        tracing::warn!(channel = %id, error, "channel");
        if let Err(e) = self.db().set_channel_status(id, None, Some(error)).await {
            tracing::warn!(channel = %id, error = %format!("{e:#}"), "recording a channel's error failed");
        }
    }
}

/// A channel's task: holds the lease, sets the platform up, polls, stores, handles.
async fn run(mgr: Arc<ChannelManager>, id: String, cancel: CancellationToken) {
    let lease_ms = (mgr.settings.lease_s.max(3) * 1000) as i64;
    // The mode the platform was last set up for on this host (none yet).
    let mut set_up: Option<String> = None;
    let mut retry = Duration::from_millis(mgr.settings.retry_ms.max(10));
    let pause = |d: Duration| {
        let cancel = cancel.clone();
        async move {
            tokio::select! {
                _ = cancel.cancelled() => false,
                _ = tokio::time::sleep(d) => true,
            }
        }
    };
    while !cancel.is_cancelled() {
        let step = poll_once(&mgr, &id, lease_ms, &mut set_up, &cancel).await;
        let wait = match step {
            Ok(Step::Polled) => {
                retry = Duration::from_millis(mgr.settings.retry_ms.max(10));
                continue;
            }
            Ok(Step::Stopped) => break,
            // Another host polls it: look again before its lease could run out.
            Ok(Step::NotOurs) => Duration::from_millis((lease_ms / 3) as u64),
            Ok(Step::Wait(d)) => d,
            Err(e) => {
                mgr.note_error(&id, &format!("{e:#}")).await;
                let wait = retry;
                retry = (retry * 2).min(Duration::from_secs(60));
                wait
            }
        };
        if !pause(wait).await {
            break;
        }
    }
    mgr.wakers.lock().expect("wakers lock").remove(&id);
    if let Err(e) = mgr.db().drop_poll_lease(&id, &mgr.host_id).await {
        tracing::warn!(channel = %id, error = %format!("{e:#}"), "giving a channel's lease up failed");
    }
}

enum Step {
    Polled,
    NotOurs,
    Stopped,
    Wait(Duration),
}

async fn poll_once(
    mgr: &Arc<ChannelManager>,
    id: &str,
    lease_ms: i64,
    set_up: &mut Option<String>,
    cancel: &CancellationToken,
) -> Result<Step> {
    let Some(channel) = mgr.db().get_channel(id).await? else {
        return Ok(Step::Stopped);
    };
    if !channel.running {
        return Ok(Step::Stopped);
    }
    if !mgr.db().take_poll_lease(id, &mgr.host_id, lease_ms).await? {
        *set_up = None;
        return Ok(Step::NotOurs);
    }
    let info = mgr
        .runtime
        .channel_info(&channel.instance_id)
        .ok_or_else(|| {
            anyhow!(
                "plugin instance `{}` is not a loaded channel (disabled, removed or failing to load)",
                channel.instance_id
            )
        })?;
    // Again when the operator changed the channel's mode.
    if set_up.as_deref() != Some(channel.mode.as_str()) {
        set_up_platform(mgr, &channel).await?;
        *set_up = Some(channel.mode.clone());
    }
    // Events stored but not handled when a host stopped are handled first.
    handle_pending(mgr, &channel, &info, cancel).await?;
    if channel.mode == "webhook" {
        // Deliveries are stored by whichever host receives them; this one, holding the
        // lease, handles them when woken, and looks anyway well within the lease.
        let waker = mgr.waker(id);
        let look_again = Duration::from_millis((lease_ms / 3) as u64);
        tokio::select! {
            _ = cancel.cancelled() => return Ok(Step::Stopped),
            _ = waker.notified() => {}
            _ = tokio::time::sleep(look_again) => {}
        }
        handle_pending(mgr, &channel, &info, cancel).await?;
        return Ok(Step::Polled);
    }
    let polled = tokio::select! {
        _ = cancel.cancelled() => return Ok(Step::Stopped),
        polled = mgr.runtime.channel_poll(
            &channel.instance_id,
            channel.poll_cursor.as_deref(),
            mgr.settings.poll_wait_s,
        ) => polled,
    };
    let batch = match polled {
        Ok(batch) => batch,
        Err(ChannelError::RateLimited(s)) => return Ok(Step::Wait(Duration::from_secs(s.into()))),
        Err(ChannelError::WebhookActive(why)) => {
            // Someone set a webhook since: polling mode again at the next turn.
            *set_up = None;
            bail!("{}", ChannelError::WebhookActive(why));
        }
        Err(e) => bail!("{e}"),
    };
    let events: Vec<(String, String)> = batch
        .events
        .iter()
        .map(|e| Ok((e.id.clone(), serde_json::to_string(e)?)))
        .collect::<Result<_>>()?;
    let stored = mgr
        .db()
        .store_channel_batch(
            id,
            &mgr.host_id,
            &events,
            batch.next_cursor.as_deref(),
            batch.kv.as_ref(),
        )
        .await?;
    if stored.is_none() {
        *set_up = None;
        return Ok(Step::NotOurs);
    }
    if channel.last_error.is_some() {
        mgr.db().set_channel_status(id, None, None).await?;
    }
    handle_pending(mgr, &channel, &info, cancel).await?;
    Ok(Step::Polled)
}

/// Learns who the bot is and puts the platform in polling mode.
async fn set_up_platform(mgr: &ChannelManager, channel: &ChannelRow) -> Result<()> {
    let outcomes = mgr
        .runtime
        .channel_act(&channel.instance_id, &Action::Setup(Setup::Identify))
        .await?;
    for outcome in &outcomes {
        match outcome {
            Outcome::Identified(me) => {
                let json = serde_json::to_string(me)?;
                mgr.db()
                    .set_channel_status(&channel.id, Some(&json), channel.last_error.as_deref())
                    .await?;
            }
            Outcome::Done(_) => {}
            other => bail!("identifying the bot: {other:?}"),
        }
    }
    let setup = match (channel.mode.as_str(), &mgr.settings.public_url) {
        ("poll", _) => Setup::UsePolling,
        (_, Some(base)) => Setup::UseWebhook(format!(
            "{}/hooks/channels/{}",
            base.trim_end_matches('/'),
            channel.id
        )),
        // Nowhere to point the platform at: the operator registered the hook URL.
        (_, None) => return Ok(()),
    };
    let outcomes = mgr
        .runtime
        .channel_act(&channel.instance_id, &Action::Setup(setup))
        .await?;
    if let Some(bad) = outcomes.iter().find(|o| !matches!(o, Outcome::Done(_))) {
        bail!("setting the platform up for {}: {bad:?}", channel.mode);
    }
    Ok(())
}

async fn handle_pending(
    mgr: &Arc<ChannelManager>,
    channel: &ChannelRow,
    info: &ChannelInfo,
    cancel: &CancellationToken,
) -> Result<()> {
    use futures::StreamExt;
    loop {
        let pending = mgr.db().pending_channel_events(&channel.id, 256).await?;
        if pending.is_empty() {
            return Ok(());
        }
        // Read again for each batch: the operator may have changed the agent or who may talk
        // while the poll was waiting.
        let Some(channel) = mgr.db().get_channel(&channel.id).await? else {
            return Ok(());
        };
        let channel = &channel;
        // A chat's events are handled in order, one after another (its second message is
        // answered against the first's answer); different chats at once, up to the channel's
        // share of its owner's runs. Every lane of a batch ends before the next batch is read,
        // so no chat ever has two events in hand.
        let lanes = lanes(pending);
        let results: Vec<Result<()>> = futures::stream::iter(lanes)
            .map(|lane| handle_lane(mgr, channel, info, cancel, lane))
            .buffer_unordered(mgr.concurrent_chats())
            .collect()
            .await;
        results.into_iter().collect::<Result<()>>()?;
        if cancel.is_cancelled() {
            return Ok(());
        }
    }
}

/// An event read back from the store: `None` if it no longer parses.
type Stored = (String, Option<Event>);

/// Splits stored events into lanes by chat (and thread), each lane in the order stored.
fn lanes(pending: Vec<(String, String)>) -> Vec<Vec<Stored>> {
    let mut order: Vec<Vec<Stored>> = Vec::new();
    let mut by_chat: HashMap<(String, String), usize> = HashMap::new();
    for (event_id, json) in pending {
        let event = serde_json::from_str::<Event>(&json).ok();
        let chat = event.as_ref().and_then(|e| match &e.kind {
            EventKind::Message(m) | EventKind::Edited(m) => Some(&m.chat),
            EventKind::Press(p) => Some(&p.chat),
            EventKind::ChatMoved { chat, .. } | EventKind::ChatClosed(chat) => Some(chat),
            EventKind::Ignored { .. } => None,
        });
        match chat {
            Some(chat) => {
                let key = (chat.id.clone(), thread_key(chat).to_owned());
                let lane = *by_chat.entry(key).or_insert_with(|| {
                    order.push(Vec::new());
                    order.len() - 1
                });
                order[lane].push((event_id, event));
            }
            // Of no chat: a lane of its own.
            None => order.push(vec![(event_id, event)]),
        }
    }
    order
}

async fn handle_lane(
    mgr: &Arc<ChannelManager>,
    channel: &ChannelRow,
    info: &ChannelInfo,
    cancel: &CancellationToken,
    lane: Vec<Stored>,
) -> Result<()> {
    for (event_id, event) in lane {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let state = match &event {
            Some(event) => handle_event(mgr, channel, info, event).await,
            None => {
                tracing::warn!(channel = %channel.id, event = %event_id, "unreadable stored event");
                "skipped"
            }
        };
        mgr.db()
            .finish_channel_event(&channel.id, &event_id, state)
            .await?;
    }
    Ok(())
}

/// Handles one event; the state it leaves the event in.
async fn handle_event(
    mgr: &Arc<ChannelManager>,
    channel: &ChannelRow,
    info: &ChannelInfo,
    event: &Event,
) -> &'static str {
    let result = match &event.kind {
        EventKind::Message(message) => on_message(mgr, channel, info, &event.id, message).await,
        EventKind::ChatClosed(chat) => set_chat_state(mgr, channel, chat, "closed").await,
        EventKind::ChatMoved { chat, to } => move_chat(mgr, channel, chat, to).await,
        EventKind::Press(press) => mgr
            .runtime
            .channel_act(
                &channel.instance_id,
                &Action::AnswerPress {
                    id: press.id.clone(),
                },
            )
            .await
            .map(|_| "done")
            .map_err(Into::into),
        EventKind::Edited(_) | EventKind::Ignored { .. } => Ok("skipped"),
    };
    match result {
        Ok(state) => state,
        Err(e) => {
            // The event was handled as far as it could be; the error is the channel's status.
            mgr.note_error(&channel.id, &format!("event {}: {e:#}", event.id))
                .await;
            "failed"
        }
    }
}

fn thread_key(chat: &Chat) -> &str {
    chat.thread.as_deref().unwrap_or("")
}

pub(super) async fn set_chat_state(
    mgr: &ChannelManager,
    channel: &ChannelRow,
    chat: &Chat,
    state: &str,
) -> Result<&'static str> {
    if let Some(mut row) = mgr
        .db()
        .get_channel_chat(&channel.id, &chat.id, thread_key(chat))
        .await?
    {
        row.state = state.to_owned();
        mgr.db().put_channel_chat(&row).await?;
    }
    Ok("done")
}

/// The chat has a new id: its session and pairing go with it.
pub(super) async fn move_chat(
    mgr: &ChannelManager,
    channel: &ChannelRow,
    chat: &Chat,
    to: &str,
) -> Result<&'static str> {
    let Some(mut row) = mgr
        .db()
        .get_channel_chat(&channel.id, &chat.id, thread_key(chat))
        .await?
    else {
        return Ok("skipped");
    };
    let mut moved = row.clone();
    moved.chat_id = to.to_owned();
    mgr.db().put_channel_chat(&moved).await?;
    row.state = "moved".into();
    row.session_id = None;
    mgr.db().put_channel_chat(&row).await?;
    Ok("done")
}

/// A pairing code: eight characters people can read out without confusion.
fn pairing_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    // 32 symbols divide 256: no symbol is likelier than another.
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

const HELP: &str =
    "I answer messages here with an AI agent. Send /new to start a new conversation.";

async fn on_message(
    mgr: &Arc<ChannelManager>,
    channel: &ChannelRow,
    info: &ChannelInfo,
    event_id: &str,
    message: &Message,
) -> Result<&'static str> {
    use super::model::ChatKind;
    if message.sender.is_bot {
        return Ok("skipped");
    }
    if message.chat_kind != ChatKind::Direct && !message.addressed && channel.groups_need_address {
        return Ok("skipped");
    }
    let access = Access::parse(&channel.access);
    if access == Access::Disabled {
        return Ok("skipped");
    }
    let now = crate::store::now_ms();
    let chat = &message.chat;
    let mut row = match mgr
        .db()
        .get_channel_chat(&channel.id, &chat.id, thread_key(chat))
        .await?
    {
        Some(row) => row,
        None => ChatRow {
            channel_id: channel.id.clone(),
            chat_id: chat.id.clone(),
            thread_id: thread_key(chat).to_owned(),
            state: "pending".into(),
            kind: serde_json::to_value(message.chat_kind)?
                .as_str()
                .unwrap_or("direct")
                .to_owned(),
            title: message
                .sender
                .name
                .clone()
                .unwrap_or_else(|| chat.id.clone()),
            session_id: None,
            pair_code: None,
            pair_expires_ms: None,
        },
    };
    let allowed = match access {
        Access::Open => true,
        Access::Allowlist => channel.allowlist.contains(&message.sender.id),
        Access::Pairing => matches!(row.state.as_str(), "paired" | "closed"),
        Access::Disabled => false,
    };
    if !allowed {
        if access != Access::Pairing {
            return Ok("skipped");
        }
        // One code at a time per chat, so a stranger cannot make the bot spam.
        if row.pair_code.is_some() && row.pair_expires_ms.is_some_and(|t| t > now) {
            return Ok("skipped");
        }
        let code = pairing_code();
        row.state = "pending".into();
        row.pair_code = Some(code.clone());
        row.pair_expires_ms = Some(now + (mgr.settings.pairing_ttl_s as i64) * 1000);
        mgr.db().put_channel_chat(&row).await?;
        let text = format!(
            "This bot answers only chats its owner approved. Your pairing code is {code}. \
             Ask the owner to run: kelp channel pair approve {code}"
        );
        send_plain(mgr, channel, chat, &text, &format!("{event_id}:pair")).await?;
        return Ok("done");
    }
    if row.state != "paired" {
        // A closed chat that writes again was unblocked; an allowed one is paired now.
        row.state = "paired".into();
        mgr.db().put_channel_chat(&row).await?;
    }
    match message.command.as_ref().map(|c| c.name.as_str()) {
        Some("start" | "help") => {
            send_plain(mgr, channel, chat, HELP, &format!("{event_id}:help")).await?;
            return Ok("done");
        }
        Some("new") => {
            row.session_id = None;
            mgr.db().put_channel_chat(&row).await?;
            send_plain(
                mgr,
                channel,
                chat,
                "Started a new conversation.",
                &format!("{event_id}:new"),
            )
            .await?;
            return Ok("done");
        }
        _ => {}
    }
    if message.text.trim().is_empty() && message.attachments.is_empty() {
        return Ok("skipped");
    }
    let session_id = match &row.session_id {
        Some(id) => id.clone(),
        None => {
            let title = format!("{} ({})", row.title, channel.instance_id);
            let made = mgr
                .db()
                .create_session(&channel.owner_id, Some(&channel.agent_id), &title)
                .await?;
            let crate::store::sessions::SessionWrite::Done(session) = made else {
                bail!("the channel's agent `{}` is gone", channel.agent_id);
            };
            row.session_id = Some(session.id.clone());
            mgr.db().put_channel_chat(&row).await?;
            session.id
        }
    };
    let text = with_attachments(mgr, channel, &session_id, event_id, message).await?;
    super::reply::answer(mgr, channel, info, chat, &session_id, event_id, &text).await?;
    Ok("done")
}

/// The message's text for the agent: with its files listed by the ids the agent's
/// `fetch_attachment` tool takes (the files stay on the platform until fetched).
async fn with_attachments(
    mgr: &ChannelManager,
    channel: &ChannelRow,
    session_id: &str,
    event_id: &str,
    message: &Message,
) -> Result<String> {
    if message.attachments.is_empty() {
        return Ok(message.text.clone());
    }
    let mut rows = Vec::new();
    let mut listed = Vec::new();
    for (i, a) in message.attachments.iter().enumerate() {
        // Stable for the event, so handling it again after a crash stores nothing twice.
        let id = attachment_id(&channel.id, event_id, i);
        let kind = serde_json::to_value(a.kind)?
            .as_str()
            .unwrap_or("other")
            .to_owned();
        let mut line = format!("- {id}: {kind}");
        if let Some(name) = &a.name {
            line.push_str(&format!(" \"{name}\""));
        }
        if let Some(mime) = &a.mime_type {
            line.push_str(&format!(", {mime}"));
        }
        if let Some(size) = a.size {
            line.push_str(&format!(", {size} bytes"));
        }
        listed.push(line);
        rows.push(crate::store::channels::AttachmentRow {
            id,
            session_id: session_id.to_owned(),
            channel_id: channel.id.clone(),
            kind,
            locator: a.locator.clone(),
            name: a.name.clone(),
            mime_type: a.mime_type.clone(),
            size: a.size.map(|s| s.min(i64::MAX as u64) as i64),
        });
    }
    mgr.db().add_channel_attachments(&rows).await?;
    let mut text = message.text.trim().to_owned();
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str(&format!(
        "[The user attached {} file(s). The `fetch_attachment` tool saves one in your workspace \
         by its id:\n{}]",
        listed.len(),
        listed.join("\n")
    ));
    Ok(text)
}

/// An attachment's id: short, and the same each time the same event is handled.
fn attachment_id(channel_id: &str, event_id: &str, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{channel_id}\n{event_id}\n{index}"));
    format!("att-{}", &hex::encode(digest)[..12])
}

/// Sends a short host message (pairing, help) as plain text.
pub(super) async fn send_plain(
    mgr: &ChannelManager,
    channel: &ChannelRow,
    chat: &Chat,
    text: &str,
    key: &str,
) -> Result<()> {
    let action = Action::Send(Outbound {
        chat: chat.clone(),
        text: text.to_owned(),
        format: TextFormat::Plain,
        reply_to: None,
        buttons: Vec::new(),
        idempotency_key: key.to_owned(),
    });
    super::reply::act(mgr, channel, action).await.map(drop)
}
