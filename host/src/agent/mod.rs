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
use crate::store::runs::RunRow;
use crate::store::sessions::SessionRow;
use crate::store::{Db, now_ms};
use budget::{BudgetSettings, Budgets, Price};
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
    /// Prices in USD per million tokens, by model id; extends and overrides the built-in table.
    pub prices: BTreeMap<String, Price>,
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
    pub cost_usd: f64,
    /// Set when `status` is `failed`: `{code, message}`.
    pub error: Option<Value>,
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
    #[error("{0}")]
    Budget(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

struct ActiveRun {
    run_id: String,
    cancel: CancellationToken,
}

struct ReleaseSession {
    host: Arc<AgentHost>,
    session_id: String,
    run_id: String,
}

impl Drop for ReleaseSession {
    fn drop(&mut self) {
        // By run id: the session may already run the next message.
        self.host.release_active(&self.session_id, &self.run_id);
        self.host.hub.release(&self.session_id);
    }
}

/// A session's messages up to its message number `last_seq`.
struct Conversation {
    messages: Arc<Vec<Message>>,
    last_seq: i64,
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

    /// Marks this host's runs cut off by a crash and drops their budget reservations; call
    /// once at start.
    pub async fn recover(&self) -> anyhow::Result<u64> {
        self.db()
            .release_host_reservations(&self.host_id, now_ms())
            .await?;
        let n = self.db().mark_interrupted_runs(&self.host_id).await?;
        if n > 0 {
            tracing::warn!(
                runs = n,
                "marked runs cut off by the last stop as interrupted"
            );
        }
        Ok(n)
    }

    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).copied()
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

    /// The id of the session's run in progress, if any.
    pub fn active_run(&self, session_id: &str) -> Option<String> {
        self.active
            .lock()
            .expect("active lock")
            .get(session_id)
            .map(|a| a.run_id.clone())
    }

    /// Marks the session free once `run_id` is over (before its last event goes out, so a
    /// client that reacts to `finish` with a new message does not find the session busy).
    pub(crate) fn release_active(&self, session_id: &str, run_id: &str) {
        let mut active = self.active.lock().expect("active lock");
        if active.get(session_id).is_some_and(|a| a.run_id == run_id) {
            active.remove(session_id);
        }
    }

    /// Asks the session's run to stop at its next await point; false if none is running.
    pub fn abort(&self, session_id: &str) -> bool {
        match self.active.lock().expect("active lock").get(session_id) {
            Some(run) => {
                run.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Stores the user's message and starts a run on it. One run per session at a time: a
    /// second message while one is active is refused (`Busy`), not queued — a queued message
    /// would be answered against a conversation its sender has not seen yet.
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
                            cancel: cancel.clone(),
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
        // After the session is ours: the history then holds the previous run's last message.
        let prepared = self.prepare(owner_id, session_id).await;
        let begun = match prepared {
            Ok((session, agent, settings, history)) => self
                .begin(&session, &agent, &run_id, text, settings)
                .await
                .map(|b| (session, agent, history, b)),
            Err(e) => Err(e),
        };
        match begun {
            Ok((session, agent, history, (channel, budget, pending, stored))) => {
                self.runs_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let host = self.clone();
                let session_id = session.id.clone();
                let owner_id = session.owner_id.clone();
                let run = run::Run {
                    host: host.clone(),
                    run_id: run_id.clone(),
                    session_id: session_id.clone(),
                    owner_id,
                    agent,
                    channel,
                    cancel,
                    budget,
                    start: Mutex::new(Some(pending)),
                    history: Mutex::new(Some(history.messages)),
                    base_seq: history.last_seq,
                    write_failed: Default::default(),
                    start_write: Mutex::new(None),
                };
                tokio::spawn(async move {
                    // Frees the session even if the run panicked, so it never stays busy.
                    let release = ReleaseSession {
                        host: host.clone(),
                        session_id: session_id.clone(),
                        run_id: run.run_id.clone(),
                    };
                    let outcome = Arc::new(run.execute().await);
                    // Free before telling waiters: one that sends the next message at once
                    // must not find the session still busy.
                    drop(release);
                    let _ = done_tx.send(Some(outcome));
                });
                // Answered once the message is stored (so an acknowledged message survives a
                // crash), while the run's provider call is already under way.
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
            Err(e) => {
                self.active.lock().expect("active lock").remove(session_id);
                Err(e)
            }
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
        if let Some(price) = self.price(&agent.provider.model) {
            let estimate = run::estimate_first_call(self, agent, &text, &price);
            if let Err(e) = self
                .budgets
                .check(self.db(), &session.owner_id, &settings, estimate)
                .await?
            {
                return Err(StartError::Budget(e.0));
            }
        }
        let channel = self.channel(&session.id).await?;
        channel.begin_run(run_id);
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

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.stream_idle_timeout_s.max(1))
    }

    pub(crate) fn workspace(&self, session_id: &str) -> Option<PathBuf> {
        self.runtime.session_workspace(session_id).ok()
    }
}
