//! The agent loop: runs, their events, costs and budgets.
//!
//! - `events.rs` — per-session numbered events, fan-out, replay after reconnects
//! - `budget.rs` — prices, the ledger's limits, reservations
//! - `history.rs` — the conversations of sessions run lately, so a run need not read them
//! - `run.rs` — one run: prompt, provider stream, tools, steps

pub mod budget;
pub mod events;
mod history;
mod run;

pub use run::STEP_SEPARATOR;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::llm::{Message, Part, Role, Usage};
use crate::plugins::PluginRuntime;
use crate::store::agents::AgentRow;
use crate::store::claims::{Claim, ClaimRequest};
use crate::store::runs::RunRow;
use crate::store::sessions::SessionRow;
use crate::store::{Db, now_ms};
use budget::{BudgetSettings, Budgets, Price, Pricing};
use events::{EventHub, SessionChannel};

/// `[agent]` settings of `kelp serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// Attempts after the first for a provider call that failed retryably (429, 5xx,
    /// connection) before its first delta arrived.
    pub max_retries: u32,
    /// First backoff in milliseconds; doubles per attempt (with jitter) unless the vendor
    /// sent `retry-after`.
    pub retry_base_ms: u64,
    /// A `retry-after` longer than this many seconds ends the run instead of stalling it.
    pub max_retry_after_s: u64,
    /// Seconds to wait for the next chunk of a response before giving up on it.
    pub stream_idle_timeout_s: u64,
    /// Events of a live run kept for reconnecting clients.
    pub replay_buffer_events: usize,
    /// Share of the context window the prompt may fill before the oldest turns are dropped.
    pub context_fill: f64,
    /// Context window assumed for models whose provider does not say.
    pub default_context_window: u32,
    /// Output tokens assumed in cost estimates when the agent sets no `max_tokens`.
    pub estimated_output_tokens: u32,
    /// Prices in USD per million tokens, by model id (extends and overrides the built-in
    /// table) or by `instance/model` (that provider instance only, e.g. a local server that
    /// should count against budgets; comes first).
    pub prices: BTreeMap<String, Price>,
    /// Runs one user may have in progress at once, counted across every host sharing the
    /// database. Each run holds a provider stream, so without a bound one user with many
    /// sessions (or many `/v1` requests) could take every stream the host can run.
    pub max_runs_per_user: u32,
    /// Seconds a host's claim on a session's run holds without being renewed (the host
    /// renews it every third of this). A host that dies keeps its sessions busy this long at
    /// most; an abort or a delete that reaches another host stops the run within a third of
    /// it.
    pub session_lease_s: u64,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            max_retries: 3,
            retry_base_ms: 500,
            max_retry_after_s: 60,
            stream_idle_timeout_s: 120,
            replay_buffer_events: 4096,
            context_fill: 0.8,
            default_context_window: 32_768,
            estimated_output_tokens: 1024,
            prices: BTreeMap::new(),
            max_runs_per_user: 8,
            session_lease_s: 30,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunOutcome {
    pub run_id: String,
    pub session_id: String,
    /// `completed`, `aborted`, `max_steps` or `failed`.
    pub status: String,
    /// The final assistant text.
    pub text: String,
    pub tool_calls: Vec<ToolCallRecord>,
    pub usage: Usage,
    pub steps: u32,
    pub cost_usd: budget::Usd,
    /// Set when `status` is `failed`: `{code, message}`.
    pub error: Option<Value>,
    /// The text of every step, in order, a blank line between steps: what a client that
    /// streamed the run's `text-delta`s saw.
    #[serde(skip)]
    pub reply: String,
}

/// A tool call made during a run, with its result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ToolCallRecord {
    pub id: String,
    pub name: String,
    pub arguments: String,
    pub result: String,
    pub is_error: bool,
}

/// Why a run was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the session has a run in progress ({0}); wait for it or abort it")]
    Busy(String),
    #[error("the session has no agent: give it one (PATCH /api/sessions/{{id}})")]
    NoAgent,
    #[error("no such session")]
    NotFound,
    #[error(
        "you have {0} runs in progress, the most allowed at once; wait for one to finish or abort one"
    )]
    TooManyRuns(u32),
    #[error("{0}")]
    Budget(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

struct ActiveRun {
    run_id: String,
    owner_id: String,
    cancel: CancellationToken,
    done: watch::Receiver<Option<Arc<RunOutcome>>>,
}

/// A session's claim by one run: this host's mark and the database's (`store/claims.rs`).
/// Dropping it releases both, so a request whose client went away mid-start, a start that
/// failed, or a run that panicked never leaves the session busy.
pub(crate) struct SessionClaim {
    host: Arc<AgentHost>,
    session_id: String,
    run_id: String,
    /// The database may hold the claim and no write has released it yet.
    stored: std::sync::atomic::AtomicBool,
}

impl SessionClaim {
    /// The run's last write released the database's claim.
    pub(crate) fn released_in_db(&self) {
        self.stored
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Releases the claim now, waiting for the database; dropping it releases in the
    /// background instead.
    async fn release(self) {
        match self
            .host
            .db()
            .release_claim(&self.session_id, &self.run_id)
            .await
        {
            Ok(()) => self.released_in_db(),
            // The drop tries again; if that fails too, the lease lapses on its own.
            Err(e) => {
                tracing::warn!(session = %self.session_id, error = %format!("{e:#}"), "releasing a session's claim failed")
            }
        }
    }
}

impl Drop for SessionClaim {
    fn drop(&mut self) {
        // By run id: the session may already run the next message.
        self.host.release_active(&self.session_id, &self.run_id);
        if !self.stored.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let db = self.host.db().clone();
        let (session_id, run_id) = (self.session_id.clone(), self.run_id.clone());
        runtime.spawn(async move {
            // If this fails too, the lease lapses on its own.
            if let Err(e) = db.release_claim(&session_id, &run_id).await {
                tracing::warn!(session = %session_id, run = %run_id, error = %format!("{e:#}"), "releasing a session's claim failed");
            }
        });
    }
}

/// A session's messages up to its message number `last_seq`, and the number its next event
/// takes.
struct Conversation {
    messages: Arc<Vec<Message>>,
    last_seq: i64,
    next_event: i64,
}

/// A started run.
pub struct StartedRun {
    pub run_id: String,
    pub done: watch::Receiver<Option<Arc<RunOutcome>>>,
}

/// Runs agents in this process.
pub struct AgentHost {
    runtime: Arc<PluginRuntime>,
    settings: AgentSettings,
    prices: BTreeMap<String, Price>,
    host_id: String,
    hub: EventHub,
    active: Mutex<HashMap<String, ActiveRun>>,
    budgets: Arc<Budgets>,
    history: history::HistoryCache,
    runs_total: std::sync::atomic::AtomicU64,
    /// Runs that started from a kept conversation, and runs that read it from the database.
    history_hits: std::sync::atomic::AtomicU64,
    history_reads: std::sync::atomic::AtomicU64,
}

impl AgentHost {
    pub fn new(runtime: Arc<PluginRuntime>, settings: AgentSettings, host_id: String) -> Self {
        let mut prices = budget::default_prices();
        prices.extend(settings.prices.clone());
        AgentHost {
            hub: EventHub::new(settings.replay_buffer_events),
            runtime,
            settings,
            prices,
            active: Mutex::new(HashMap::new()),
            budgets: Arc::new(Budgets::new(host_id.clone())),
            host_id,
            history: Default::default(),
            runs_total: Default::default(),
            history_hits: Default::default(),
            history_reads: Default::default(),
        }
    }

    pub fn db(&self) -> &Db {
        self.runtime.db()
    }

    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }

    /// Runs started since the process started, for `/metrics`.
    pub fn runs_total(&self) -> u64 {
        self.runs_total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How runs got their conversation since the process started, for `/metrics`: from the
    /// kept conversation, and from the database (a session's first run reads nothing).
    pub fn history_sources(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.history_hits.load(Relaxed),
            self.history_reads.load(Relaxed),
        )
    }

    /// Marks this host's runs cut off by a crash as interrupted and frees their sessions;
    /// call once at start. Their budget reservations stay until they expire: the calls they
    /// covered may have cost money the ledger never heard of.
    pub async fn recover(&self) -> anyhow::Result<u64> {
        self.db().delete_expired_reservations(now_ms()).await?;
        let n = self.db().mark_interrupted_runs(&self.host_id).await?;
        self.db().release_host_claims(&self.host_id).await?;
        if n > 0 {
            tracing::warn!(
                runs = n,
                "marked runs cut off by the last stop as interrupted"
            );
        }
        Ok(n)
    }

    /// How calls of `model` through provider instance `provider` are priced: by an
    /// `instance/model` entry of `[agent.prices]`; else free when the instance's base URL is
    /// a local or private address (a stand-in or a local server named like a vendor's model
    /// costs nothing); else by the price table.
    pub fn pricing(&self, provider: &str, model: &str) -> Pricing {
        if let Some(price) = self.prices.get(&format!("{provider}/{model}")) {
            return Pricing::Instance(*price);
        }
        if self
            .runtime
            .provider_address(provider)
            .is_some_and(|a| a.local)
        {
            return Pricing::Local;
        }
        match self.prices.get(model) {
            Some(price) => Pricing::Table(*price),
            None => Pricing::Unpriced,
        }
    }

    /// What a user should know about running `model` on `provider`: said in the agent's
    /// view.
    pub fn model_warnings(&self, provider: &str, model: &str) -> Vec<String> {
        if self.pricing(provider, model) != Pricing::Unpriced {
            return Vec::new();
        }
        vec![format!(
            "model `{model}` has no price: its calls are recorded as costing nothing and no \
             budget limit applies to them (an operator can add it under [agent.prices])"
        )]
    }

    pub async fn budget_settings(&self, owner: &str) -> anyhow::Result<BudgetSettings> {
        Ok(BudgetSettings::from_settings(
            &self.db().user_settings(owner).await?,
        ))
    }

    /// The session's event channel.
    pub async fn channel(&self, session_id: &str) -> anyhow::Result<Arc<SessionChannel>> {
        self.hub.channel(self.db(), session_id).await
    }

    /// Whether this host has any run in progress.
    pub fn has_runs(&self) -> bool {
        !self.active.lock().expect("active lock").is_empty()
    }

    /// Event channels open on this host: one per session that has a run in progress here or
    /// a subscriber.
    pub fn open_channels(&self) -> usize {
        self.hub.len()
    }

    /// Marks the session free once `run_id` is over (before its last event goes out, so a
    /// client that reacts to `finish` with a new message does not find the session busy).
    pub(crate) fn release_active(&self, session_id: &str, run_id: &str) {
        let mut active = self.active.lock().expect("active lock");
        if active.get(session_id).is_some_and(|a| a.run_id == run_id) {
            active.remove(session_id);
        }
    }

    /// Asks the owner's session's run to stop at its next await point: at once if this host
    /// runs it, else through the database, where the host running it sees the request when it
    /// next renews its claim. The run's id, or `None` if the session has no run in progress.
    pub async fn abort(&self, owner_id: &str, session_id: &str) -> anyhow::Result<Option<String>> {
        if let Some(run_id) = self.abort_local(session_id, |r| r.owner_id == owner_id) {
            return Ok(Some(run_id));
        }
        self.db().request_abort(owner_id, session_id).await
    }

    fn abort_local(&self, session_id: &str, mine: impl Fn(&ActiveRun) -> bool) -> Option<String> {
        let active = self.active.lock().expect("active lock");
        let run = active.get(session_id).filter(|r| mine(r))?;
        run.cancel.cancel();
        Some(run.run_id.clone())
    }

    /// Stops the session's run before the session is deleted: aborts it and waits (a bounded
    /// time) for it to store its end, so no step of it is written against a deleted session,
    /// its costs reach the ledger, and it makes no workspace again. A run on another host is
    /// asked to stop through the database, and waited for until its claim is cleared.
    pub async fn stop_session(&self, owner_id: &str, session_id: &str) -> anyhow::Result<()> {
        let done = {
            let active = self.active.lock().expect("active lock");
            active
                .get(session_id)
                .filter(|r| r.owner_id == owner_id)
                .map(|r| {
                    r.cancel.cancel();
                    r.done.clone()
                })
        };
        match done {
            Some(done) => wait_for_end(done).await,
            None => {
                if self
                    .db()
                    .request_abort(owner_id, session_id)
                    .await?
                    .is_some()
                {
                    self.wait_for_release(session_id).await?;
                }
            }
        }
        Ok(())
    }

    /// Waits until the session has no live claim: the host running it saw the abort at its
    /// next renewal (a third of the lease) and stored the run's end. At most that long and a
    /// few seconds more; a host that died leaves a claim that lapses on its own.
    async fn wait_for_release(&self, session_id: &str) -> anyhow::Result<()> {
        let patience = Duration::from_millis((self.lease_ms() / 3) as u64) + Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + patience;
        while self.db().live_claim(session_id).await?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(session = %session_id, "a run on another host did not stop in time; going ahead without it");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// [`AgentHost::stop_session`] for every run of a user about to be deleted.
    pub async fn stop_user(&self, owner_id: &str) -> anyhow::Result<()> {
        let local: Vec<_> = {
            let active = self.active.lock().expect("active lock");
            active
                .values()
                .filter(|r| r.owner_id == owner_id)
                .map(|r| {
                    r.cancel.cancel();
                    r.done.clone()
                })
                .collect()
        };
        futures::future::join_all(local.into_iter().map(wait_for_end)).await;
        let mut elsewhere = Vec::new();
        for (session_id, _) in self.db().running_sessions(owner_id).await? {
            if self
                .db()
                .request_abort(owner_id, &session_id)
                .await?
                .is_some()
            {
                elsewhere.push(session_id);
            }
        }
        for session_id in elsewhere {
            self.wait_for_release(&session_id).await?;
        }
        Ok(())
    }

    /// Whether the owner may start another run now (`TooManyRuns` if not): for a request
    /// that would store something (a session, history) before starting it. `start` checks
    /// again, atomically.
    pub async fn has_room(&self, owner_id: &str) -> Result<(), StartError> {
        let max = self.settings.max_runs_per_user.max(1);
        if self.db().running_sessions(owner_id).await?.len() >= max as usize {
            return Err(StartError::TooManyRuns(max));
        }
        Ok(())
    }

    /// Stores the user's message and starts a run on it. One run per session at a time, on
    /// every host sharing the database: a second message while one is active is refused
    /// (`Busy`), not queued — a queued message would be answered against a conversation its
    /// sender has not seen yet.
    pub async fn start(
        self: &Arc<Self>,
        owner_id: &str,
        session_id: &str,
        text: String,
    ) -> Result<StartedRun, StartError> {
        let run_id = crate::util::new_id();
        let cancel = CancellationToken::new();
        let (done_tx, done_rx) = watch::channel(None);
        let busy = {
            let mut active = self.active.lock().expect("active lock");
            match active.get(session_id) {
                Some(other) => Some(other.run_id.clone()),
                None => {
                    active.insert(
                        session_id.to_owned(),
                        ActiveRun {
                            run_id: run_id.clone(),
                            owner_id: owner_id.to_owned(),
                            cancel: cancel.clone(),
                            done: done_rx.clone(),
                        },
                    );
                    None
                }
            }
        };
        if let Some(other) = busy {
            // Only the owner learns that a session is busy.
            return match self.db().get_session(owner_id, session_id).await? {
                Some(_) => Err(StartError::Busy(other)),
                None => Err(StartError::NotFound),
            };
        }
        // From here on the claim's guard frees the session whichever way this ends. It
        // counts as stored before the write is issued: if this request is dropped during the
        // write, the release it spawns is a no-op unless the claim was made.
        let claim = SessionClaim {
            host: self.clone(),
            session_id: session_id.to_owned(),
            run_id: run_id.clone(),
            stored: true.into(),
        };
        let claimed = self
            .db()
            .claim_session(&ClaimRequest {
                owner_id,
                session_id,
                run_id: &run_id,
                host_id: &self.host_id,
                max_runs: self.settings.max_runs_per_user.max(1),
                lease_ms: self.lease_ms(),
            })
            .await?;
        match claimed {
            Claim::Claimed => {}
            Claim::Busy(other) => {
                claim.released_in_db();
                return Err(StartError::Busy(other));
            }
            Claim::TooManyRuns(n) => {
                claim.released_in_db();
                return Err(StartError::TooManyRuns(n));
            }
            Claim::NotFound => {
                claim.released_in_db();
                return Err(StartError::NotFound);
            }
        }
        // After the session is ours: the history then holds the previous run's last message.
        let prepared = async {
            let (session, agent, settings, history) = self.prepare(owner_id, session_id).await?;
            let begun = self
                .begin(
                    &session,
                    &agent,
                    &run_id,
                    text,
                    settings,
                    history.next_event,
                )
                .await?;
            Ok::<_, StartError>((session, agent, history, begun))
        }
        .await;
        let (session, agent, history, (channel, budget, pending, stored)) = match prepared {
            Ok(p) => p,
            Err(e) => {
                // Refused before the run began (a budget, a deleted agent): the session is
                // free again before the client hears why, so its next message is not
                // refused as busy by a release still under way.
                claim.release().await;
                return Err(e);
            }
        };
        self.runs_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let host = self.clone();
        let run = run::Run {
            host: host.clone(),
            run_id: run_id.clone(),
            session_id: session.id.clone(),
            owner_id: session.owner_id.clone(),
            agent,
            channel,
            cancel,
            budget,
            start: Mutex::new(Some(pending)),
            history: Mutex::new(Some(history.messages)),
            base_seq: history.last_seq,
            write_failed: Default::default(),
            start_write: Mutex::new(None),
            claim,
        };
        tokio::spawn(async move {
            // The run owns the claim: it is released when the run ends, even by a panic.
            let outcome = Arc::new(run.execute().await);
            let _ = done_tx.send(Some(outcome));
        });
        // Answered once the message is stored (so an acknowledged message survives a crash),
        // while the run's provider call is already under way.
        match stored.await {
            Ok(Ok(())) => Ok(StartedRun {
                run_id,
                done: done_rx,
            }),
            Ok(Err(e)) => Err(StartError::Internal(anyhow::anyhow!(
                "storing the message failed: {e}"
            ))),
            Err(_) => Err(StartError::Internal(anyhow::anyhow!(
                "the run ended before its message was stored"
            ))),
        }
    }

    /// What a run on the session starts from: the session, its agent, the owner's budget
    /// settings and the conversation so far.
    async fn prepare(
        &self,
        owner_id: &str,
        session_id: &str,
    ) -> Result<(SessionRow, AgentRow, BudgetSettings, Conversation), StartError> {
        let ctx = self
            .db()
            .run_context(owner_id, session_id)
            .await?
            .ok_or(StartError::NotFound)?;
        let agent = ctx.agent.ok_or(StartError::NoAgent)?;
        let settings = crate::store::settings::with_defaults(ctx.settings);
        let conversation = Conversation {
            messages: self.history(session_id, ctx.last_seq).await?,
            last_seq: ctx.last_seq,
            next_event: ctx.last_event_seq + 1,
        };
        Ok((
            ctx.session,
            agent,
            BudgetSettings::from_settings(&settings),
            conversation,
        ))
    }

    /// The session's messages up to `last_seq`: none if it has none, the cached ones if
    /// the cache holds them up to that number, else read.
    async fn history(&self, session_id: &str, last_seq: i64) -> anyhow::Result<Arc<Vec<Message>>> {
        if last_seq == 0 {
            return Ok(Arc::default());
        }
        if let Some(messages) = self.history.get(session_id, last_seq) {
            self.history_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(messages);
        }
        self.history_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rows = self
            .db()
            .recent_messages(session_id, run::HISTORY_LIMIT)
            .await?;
        // A message this version cannot read is left out rather than failing every run.
        let messages = rows
            .into_iter()
            .filter_map(|row| {
                Some(Message {
                    role: Role::parse(&row.role)?,
                    content: serde_json::from_value::<Vec<Part>>(row.content).ok()?,
                })
            })
            .collect();
        Ok(Arc::new(messages))
    }

    /// The checks before a run's task starts (budget) and its first event; the run row and
    /// the user's message are written by the task, alongside its first provider call.
    async fn begin(
        &self,
        session: &SessionRow,
        agent: &AgentRow,
        run_id: &str,
        text: String,
        settings: BudgetSettings,
        next_event: i64,
    ) -> Result<
        (
            Arc<SessionChannel>,
            BudgetSettings,
            run::PendingStart,
            oneshot::Receiver<Result<(), String>>,
        ),
        StartError,
    > {
        // A run whose first call would already break a limit is refused before anything
        // is stored or sent.
        if let Some(price) = self
            .pricing(&agent.provider.plugin, &agent.provider.model)
            .price()
        {
            let estimate = run::estimate_first_call(self, agent, &text, &price);
            if let Err(e) = self
                .budgets
                .check(self.db(), &session.owner_id, &settings, estimate)
                .await?
            {
                return Err(StartError::Budget(e.0));
            }
        }
        let channel = self.hub.channel_at(&session.id, next_event);
        channel.begin_run(run_id, next_event);
        let start = channel.emit(
            run_id,
            "run-start",
            json!({"agent_id": agent.id, "model": agent.provider.model, "provider": agent.provider.plugin}),
        );
        let row = RunRow {
            id: run_id.to_owned(),
            session_id: session.id.clone(),
            owner_id: session.owner_id.clone(),
            status: "running".into(),
            error: None,
            steps: 0,
            usage: json!(Usage::default()),
            cost_micros: 0,
            started_at_ms: now_ms(),
            finished_at_ms: None,
        };
        let (written, stored) = oneshot::channel();
        let start = run::PendingStart {
            row,
            text,
            event: start.row(),
            host_id: self.host_id.clone(),
            written,
        };
        Ok((channel, settings, start, stored))
    }

    pub(crate) fn budgets(&self) -> &Arc<Budgets> {
        &self.budgets
    }

    pub(crate) fn settings(&self) -> &AgentSettings {
        &self.settings
    }

    /// How many runs one user may have going at once (at least one).
    pub(crate) fn max_runs_per_user(&self) -> u32 {
        self.settings.max_runs_per_user.max(1)
    }

    /// How long a claim on a session holds without renewal, in milliseconds.
    pub(crate) fn lease_ms(&self) -> i64 {
        (self.settings.session_lease_s.max(3) * 1000) as i64
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.stream_idle_timeout_s.max(1))
    }

    pub(crate) fn workspace(&self, session_id: &str) -> Option<PathBuf> {
        self.runtime.session_workspace(session_id).ok()
    }
}

/// How long deleting a session waits for its run to store its end before going ahead.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Waits until a run's outcome is out (or its task is gone), at most [`STOP_WAIT`].
async fn wait_for_end(mut done: watch::Receiver<Option<Arc<RunOutcome>>>) {
    let ended = async {
        while done.borrow_and_update().is_none() {
            if done.changed().await.is_err() {
                return;
            }
        }
    };
    if tokio::time::timeout(STOP_WAIT, ended).await.is_err() {
        tracing::warn!("a stopped run did not end in time; going ahead without it");
    }
}
