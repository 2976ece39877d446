//! One run: build the prompt, stream from the provider, run the tools the model called,
//! repeat until it answers without tools or `max_steps` is reached.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::budget::{Price, Reservation, Usd};
use super::events::{Event, SessionChannel};
use super::{AgentHost, RunOutcome, ToolCallRecord};
use crate::llm::{
    ChatRequest, FinishReason, Message, Part, ProviderFailure, Role, StreamEvent, Usage,
};
use crate::plugins::ToolSpec;
use crate::store::agents::AgentRow;
use crate::store::now_ms;
use crate::store::runs::{LedgerRow, RunUpdate, StepWrite};

/// The built-in tool that hands the model a skill's full text.
const LOAD_SKILL: &str = "load_skill";
/// The built-in tool that saves a file a chat channel received into the session's workspace.
const FETCH_ATTACHMENT: &str = "fetch_attachment";
/// The most text of a fetched file the tool's result quotes.
const ATTACHMENT_TEXT_QUOTE: usize = 16 * 1024;

/// Most history messages a run reads; older ones are beyond any context window anyway.
pub(super) const HISTORY_LIMIT: i64 = 2_000;

pub(super) struct Run {
    pub host: Arc<AgentHost>,
    pub run_id: String,
    pub session_id: String,
    pub owner_id: String,
    pub agent: AgentRow,
    pub channel: Arc<SessionChannel>,
    pub cancel: CancellationToken,
    /// Read once when the run starts.
    pub budget: super::budget::BudgetSettings,
    /// The session's messages when the run started (from the history cache or read).
    pub history: std::sync::Mutex<Option<Arc<Vec<Message>>>>,
    /// The session's last message number when the run started.
    pub base_seq: i64,
    /// A write of this run failed: what the session holds is not known for sure.
    pub write_failed: std::sync::atomic::AtomicBool,
    /// The run row and user message, until the task issues their write.
    pub start: std::sync::Mutex<Option<PendingStart>>,
    /// That write; every later commit waits for it.
    pub start_write: std::sync::Mutex<Option<tokio::task::JoinHandle<bool>>>,
    /// The session's claim, released when the run ends (its last write clears the
    /// database's).
    pub claim: super::SessionClaim,
}

/// The first write of a run, issued by its task next to the first provider call.
pub(super) struct PendingStart {
    pub row: crate::store::runs::RunRow,
    pub text: String,
    pub event: crate::store::runs::EventRow,
    pub host_id: String,
    /// Tells the request that started the run whether its message is stored.
    pub written: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// A tool as the model sees it, and what it maps to.
struct ExposedTool {
    spec: ToolSpec,
    /// `None` for a built-in.
    instance: Option<String>,
    tool: String,
}

/// Why a run ended early.
struct Failure {
    code: String,
    message: String,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{e:#}"), "run failed on an internal error");
        Failure {
            code: "internal".into(),
            message: "internal error (see the server log)".into(),
        }
    }
}

/// What one provider call produced.
#[derive(Default)]
struct StepResult {
    text: String,
    /// By the vendor's index, in order.
    calls: BTreeMap<u32, (String, String, String)>,
    usage: Usage,
    finish: Option<FinishReason>,
    /// Anything reached the client: a retry now would duplicate it.
    delivered: bool,
    /// The vendor accepted the request (a 2xx), so the call may cost money even if its
    /// stream never reported usage.
    answered: bool,
}

enum StepEnd {
    Done(StepResult),
    Aborted(StepResult),
    Failed(ProviderFailure, StepResult),
}

/// Between the texts of two steps of one reply ("Let me calculate that." and "It is 42."),
/// in `/v1` answers streamed or not, so the sentences do not run together.
pub const STEP_SEPARATOR: &str = "\n\n";

#[derive(Default)]
struct Totals {
    usage: Usage,
    cost_micros: i64,
    steps: u32,
    tool_calls: Vec<ToolCallRecord>,
    text: String,
    /// Every step's text, joined by [`STEP_SEPARATOR`].
    reply: String,
    /// The last step's writes, stored together with the run's end in one transaction.
    pending: Option<Pending>,
}

/// Writes held back for the run's final commit.
struct Pending {
    message: Option<Message>,
    events: Vec<Arc<Event>>,
    ledger: Option<LedgerRow>,
    /// Held until the ledger row is written.
    reservation: Option<Reservation>,
}

/// Estimated cost of a run's first call, for the refusal before anything starts.
pub(super) fn estimate_first_call(
    host: &AgentHost,
    agent: &AgentRow,
    text: &str,
    price: &Price,
) -> i64 {
    let input = (agent.instructions.len() + text.len()) as u64 / 4 + 16;
    estimate(host, agent, input, price)
}

fn estimate(host: &AgentHost, agent: &AgentRow, input_tokens: u64, price: &Price) -> i64 {
    price.cost_micros(&estimated_usage(host, agent, input_tokens))
}

/// What a call is assumed to use before it reports usage: the prompt's estimated tokens,
/// and `max_tokens` (or `estimated_output_tokens`) of output.
fn estimated_usage(host: &AgentHost, agent: &AgentRow, input_tokens: u64) -> Usage {
    let output = agent
        .provider
        .max_tokens
        .unwrap_or(host.settings().estimated_output_tokens);
    Usage {
        input_tokens,
        output_tokens: u64::from(output),
        ..Usage::default()
    }
}

impl Run {
    pub async fn execute(self) -> RunOutcome {
        // Keeps the session's claim alive while the run lasts, and stops the run if the claim
        // is lost or an abort reached another host.
        let _lease = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(renew_claim(
            self.host.db().clone(),
            self.host.lease_ms(),
            self.session_id.clone(),
            self.run_id.clone(),
            self.cancel.clone(),
        )));
        let mut totals = Totals::default();
        let mut history = repair_tool_pairs(self.take_history());
        let base_len = history.len();
        let result = self.run_steps(&mut totals, &mut history).await;
        let (status, error) = match result {
            Ok(status) => (status, None),
            Err(f) => (
                "failed",
                Some(json!({"code": f.code, "message": f.message})),
            ),
        };
        let pending = totals.pending.take();
        let mut events = Vec::new();
        let (message, ledger, reservation) = match pending {
            Some(p) => {
                events = p.events;
                (p.message, p.ledger, p.reservation)
            }
            None => (None, None, None),
        };
        if let Some(error) = &error {
            events.push(self.channel.reserve(&self.run_id, "error", error.clone()));
        } else {
            events.push(self.channel.reserve(
                &self.run_id,
                "finish",
                json!({
                    "status": status,
                    "steps": totals.steps,
                    "usage": totals.usage,
                    "cost_usd": Usd(totals.cost_micros),
                    "text": totals.text,
                }),
            ));
        }
        let stored = self
            .commit(StepWrite {
                message: message
                    .as_ref()
                    .map(|m| (Role::Assistant.as_str(), json!(m.content))),
                events: events.iter().map(|e| e.row()).collect(),
                ledger,
                releases: reservation.iter().map(|r| r.id().to_owned()).collect(),
                run: Some(self.update(status, error.clone(), &totals, true)),
                ..self.step()
            })
            .await;
        if stored {
            self.claim.released_in_db();
        }
        // The next run on this session starts from this conversation instead of reading it
        // back, if every write of this run is known to be stored.
        if self.write_failed.load(std::sync::atomic::Ordering::Relaxed) {
            self.host.history.forget(&self.session_id);
        } else {
            history.extend(message);
            let last_seq = self.base_seq + (history.len() - base_len) as i64;
            self.host.history.put(&self.session_id, last_seq, history);
        }
        self.host.release_active(&self.session_id, &self.run_id);
        // Published even if storing failed: subscribers must learn the run is over.
        for e in &events {
            self.channel.publish(e);
        }
        RunOutcome {
            run_id: self.run_id.clone(),
            session_id: self.session_id.clone(),
            status: status.to_owned(),
            text: totals.text,
            tool_calls: totals.tool_calls,
            usage: totals.usage,
            steps: totals.steps,
            cost_usd: Usd(totals.cost_micros),
            error,
            reply: totals.reply,
        }
    }

    fn issue_start(&self, history: &mut Vec<Message>) {
        let Some(p) = self.start.lock().expect("start lock").take() else {
            return;
        };
        history.push(Message::text(Role::User, p.text.clone()));
        let db = self.host.db().clone();
        let cancel = self.cancel.clone();
        let handle = tokio::spawn(async move {
            let content = json!([Part::Text { text: p.text }]);
            let result = db
                .start_run(
                    &p.row,
                    &p.host_id,
                    StepWrite {
                        session_id: &p.row.session_id,
                        run_id: &p.row.id,
                        message: Some((Role::User.as_str(), content)),
                        events: vec![p.event],
                        ..Default::default()
                    },
                )
                .await;
            let ok = result.is_ok();
            if !ok {
                // No answer to a message that was not stored (nor a bill for one).
                cancel.cancel();
            }
            let _ = p
                .written
                .send(result.map(|_| ()).map_err(|e| format!("{e:#}")));
            ok
        });
        *self.start_write.lock().expect("start lock") = Some(handle);
    }

    /// Waits for the run's first write; false if it failed.
    async fn started(&self) -> bool {
        let handle = self.start_write.lock().expect("start lock").take();
        match handle {
            Some(h) => h.await.unwrap_or(false),
            None => true,
        }
    }

    fn step(&self) -> StepWrite<'_> {
        StepWrite {
            session_id: &self.session_id,
            run_id: &self.run_id,
            ..Default::default()
        }
    }

    fn update(&self, status: &str, error: Option<Value>, t: &Totals, finished: bool) -> RunUpdate {
        RunUpdate {
            status: status.to_owned(),
            error,
            steps: i64::from(t.steps),
            usage: json!(t.usage),
            cost_micros: t.cost_micros,
            finished,
        }
    }

    /// Stores a step; false if it could not be. A step that fails (its session was deleted
    /// meanwhile, say) still puts its call's cost on the ledger, which does not depend on the
    /// session: spending stays on the books whatever happens to the conversation.
    async fn commit(&self, step: StepWrite<'_>) -> bool {
        let failed = |what: &str, e: Option<&anyhow::Error>| {
            self.write_failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            match e {
                Some(e) => {
                    tracing::error!(run = %self.run_id, error = %format!("{e:#}"), "storing {what} failed")
                }
                None => {
                    tracing::error!(run = %self.run_id, "not storing {what}: the run's first write failed")
                }
            }
        };
        let costs = StepWrite {
            ledger: step.ledger.clone(),
            releases: step.releases.clone(),
            ..self.step()
        };
        if !self.started().await {
            failed("a run step", None);
        } else {
            match self.host.db().commit_step(step).await {
                Ok(()) => return true,
                Err(e) => failed("a run step", Some(&e)),
            }
        }
        if costs.ledger.is_some()
            && let Err(e) = self.host.db().commit_step(costs).await
        {
            failed("a call's cost", Some(&e));
        }
        false
    }

    /// `history` is the conversation so far; it ends holding what the run stored but its
    /// last message.
    async fn run_steps(
        &self,
        totals: &mut Totals,
        history: &mut Vec<Message>,
    ) -> Result<&'static str, Failure> {
        let tools = self.tools().await?;
        let system = self.system_prompt().await?;
        // The user's message is written alongside the first provider call, not before it.
        self.issue_start(history);
        let max_steps = self.agent.max_steps.max(1) as u32;
        let window = self.context_window();
        let price = self
            .host
            .pricing(&self.agent.provider.plugin, &self.agent.provider.model)
            .price();
        let budget = &self.budget;
        loop {
            totals.steps += 1;
            let step = totals.steps;
            let messages = fit_context(
                &system,
                history,
                window,
                self.host.settings().context_fill,
                self.agent.provider.max_tokens,
            );
            let request = ChatRequest {
                model: self.agent.provider.model.clone(),
                messages,
                tools: tools.iter().map(|t| t.spec.clone()).collect(),
                max_tokens: self.agent.provider.max_tokens,
                temperature: self.agent.provider.temperature.map(|t| t as f32),
            };
            let input_tokens: u64 = request.messages.iter().map(Message::estimated_tokens).sum();
            let reservation = match &price {
                Some(price) => {
                    let estimate = estimate(&self.host, &self.agent, input_tokens, price);
                    match self
                        .host
                        .budgets()
                        .reserve(self.host.db(), &self.owner_id, budget, estimate)
                        .await?
                    {
                        Ok(r) => r,
                        Err(e) => {
                            return Err(Failure {
                                code: "budget_exceeded".into(),
                                message: e.0,
                            });
                        }
                    }
                }
                None => None,
            };
            let end = self.stream(step, &request).await;
            let (result, outcome) = match end {
                StepEnd::Done(r) => (r, None),
                StepEnd::Aborted(r) => (r, Some(Err("aborted"))),
                StepEnd::Failed(f, r) => (r, Some(Ok(f))),
            };
            // A call the vendor accepted but whose stream ended without usage (aborted, broken
            // off, or a server that never reports it) is settled at its estimate: it may well
            // have cost that much, and counting it as free would let budgets be outrun.
            let estimated = result.answered && result.usage == Usage::default();
            let billed = if estimated {
                estimated_usage(&self.host, &self.agent, input_tokens)
            } else {
                result.usage
            };
            let cost = price.map_or(0, |p| p.cost_micros(&billed));
            totals.usage += result.usage;
            totals.cost_micros += cost;
            let ledger = LedgerRow {
                owner_id: self.owner_id.clone(),
                run_id: self.run_id.clone(),
                session_id: self.session_id.clone(),
                provider: self.agent.provider.plugin.clone(),
                model: self.agent.provider.model.clone(),
                input_tokens: billed.input_tokens as i64,
                output_tokens: billed.output_tokens as i64,
                cache_read_tokens: billed.cache_read_tokens as i64,
                cache_write_tokens: billed.cache_write_tokens as i64,
                cost_micros: cost,
                created_at_ms: now_ms(),
                estimated,
            };
            // What the model said is kept whatever happens next: an abort or a broken stream
            // keeps the partial answer.
            let mut parts = Vec::new();
            if !result.text.is_empty() {
                parts.push(Part::Text {
                    text: result.text.clone(),
                });
            }
            let calls: Vec<(String, String, String)> = if outcome.is_none() {
                result.calls.values().cloned().collect()
            } else {
                Vec::new()
            };
            for (id, name, arguments) in &calls {
                parts.push(Part::ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                });
            }
            totals.text = result.text.clone();
            if !result.text.is_empty() {
                if !totals.reply.is_empty() {
                    totals.reply.push_str(STEP_SEPARATOR);
                }
                totals.reply.push_str(&result.text);
            }
            let message = Message {
                role: Role::Assistant,
                content: parts,
            };
            let mut events: Vec<Arc<Event>> = calls
                .iter()
                .map(|(id, name, arguments)| {
                    self.channel.reserve(
                        &self.run_id,
                        "tool-call",
                        json!({"step": step, "id": id, "name": name, "arguments": arguments}),
                    )
                })
                .collect();
            let last = outcome.is_some() || calls.is_empty();
            if last {
                events.push(self.step_finish(step, &result, cost));
            }
            let content = (!message.content.is_empty()).then(|| json!(message.content));
            let ledger = (billed != Usage::default() || cost > 0).then_some(ledger);
            if last {
                // Stored with the run's end: one transaction instead of two for the common
                // one-step answer.
                if cost > 0 {
                    events.extend(self.budget_alerts(budget, cost, cost).await);
                }
                totals.pending = Some(Pending {
                    message: (!message.content.is_empty()).then(|| message.clone()),
                    events,
                    ledger,
                    reservation,
                });
            } else {
                self.commit(StepWrite {
                    message: content.map(|c| (Role::Assistant.as_str(), c)),
                    events: events.iter().map(|e| e.row()).collect(),
                    ledger,
                    releases: reservation.iter().map(|r| r.id().to_owned()).collect(),
                    run: Some(self.update("running", None, totals, false)),
                    ..self.step()
                })
                .await;
                for e in &events {
                    self.channel.publish(e);
                }
                if cost > 0 {
                    let alerts = self.budget_alerts(budget, cost, 0).await;
                    if !alerts.is_empty() {
                        self.commit(StepWrite {
                            events: alerts.iter().map(|e| e.row()).collect(),
                            ..self.step()
                        })
                        .await;
                        for e in &alerts {
                            self.channel.publish(e);
                        }
                    }
                }
            }
            match outcome {
                Some(Err(aborted)) => return Ok(aborted),
                Some(Ok(failure)) => {
                    return Err(Failure {
                        code: failure.code().into(),
                        message: failure.message,
                    });
                }
                None => {}
            }
            if calls.is_empty() {
                return Ok("completed");
            }
            history.push(message);
            let (results, aborted) = self.run_tools(step, &tools, &calls, totals).await;
            let events = [self.step_finish(step, &result, cost)];
            let tool_message = Message {
                role: Role::Tool,
                content: results,
            };
            self.commit(StepWrite {
                message: Some((Role::Tool.as_str(), json!(tool_message.content))),
                events: events.iter().map(|e| e.row()).collect(),
                ..self.step()
            })
            .await;
            for e in &events {
                self.channel.publish(e);
            }
            history.push(tool_message);
            if aborted {
                return Ok("aborted");
            }
            if step >= max_steps {
                return Ok("max_steps");
            }
        }
    }

    /// A `budget-alert` (reserved, not yet sent) for each alert threshold this step's `cost`
    /// crossed; `unstored` is the part of it not on the ledger yet. A failure to read the
    /// spending only costs the alerts: it must not cost the step's ledger row, which is
    /// written after this.
    async fn budget_alerts(
        &self,
        budget: &super::budget::BudgetSettings,
        cost: i64,
        unstored: i64,
    ) -> Vec<Arc<Event>> {
        match self.try_budget_alerts(budget, cost, unstored).await {
            Ok(alerts) => alerts,
            Err(e) => {
                tracing::warn!(run = %self.run_id, error = %format!("{e:#}"), "budget alerts skipped: reading the spending failed");
                Vec::new()
            }
        }
    }

    async fn try_budget_alerts(
        &self,
        budget: &super::budget::BudgetSettings,
        cost: i64,
        unstored: i64,
    ) -> anyhow::Result<Vec<Arc<Event>>> {
        let mut alerts = Vec::new();
        if budget.alert_thresholds.is_empty() {
            return Ok(alerts);
        }
        let (day_start, month_start) = super::budget::period_starts(now_ms());
        for (name, limit, since) in [
            ("daily", budget.daily_limit_usd, day_start),
            ("monthly", budget.monthly_limit_usd, month_start),
        ] {
            let Some(limit) = limit.filter(|l| l.micros() > 0) else {
                continue;
            };
            let after = self.host.db().spent_since(&self.owner_id, since).await? + unstored;
            let before = after - cost;
            for t in &budget.alert_thresholds {
                let line = limit.micros() as f64 * t;
                if (before as f64) < line && after as f64 >= line {
                    alerts.push(self.channel.reserve(
                        &self.run_id,
                        "budget-alert",
                        json!({"limit": name, "threshold": t, "limit_usd": limit, "spent_usd": Usd(after)}),
                    ));
                }
            }
        }
        Ok(alerts)
    }

    fn step_finish(&self, step: u32, result: &StepResult, cost: i64) -> Arc<Event> {
        self.channel.reserve(
            &self.run_id,
            "step-finish",
            json!({
                "step": step,
                "text": result.text,
                "finish_reason": result.finish,
                "tool_calls": result.calls.len(),
                "usage": result.usage,
                "cost_usd": Usd(cost),
            }),
        )
    }

    /// Streams one provider call, retrying retryable failures that happened before anything
    /// reached the client.
    async fn stream(&self, step: u32, request: &ChatRequest) -> StepEnd {
        let runtime = self.host.runtime();
        let settings = self.host.settings();
        let mut attempt = 0u32;
        // Whether any attempt was accepted: a call that ends without usage after one is settled
        // at its estimate. (An accepted attempt broken off before a retry that does report
        // usage is not billed on top; the retry's usage stands for the call.)
        let mut answered = false;
        loop {
            let mut partial = StepResult {
                answered,
                ..StepResult::default()
            };
            let started = tokio::select! {
                _ = self.cancel.cancelled() => return StepEnd::Aborted(partial),
                s = runtime.start_provider(&self.agent.provider.plugin, request, self.host.idle_timeout()) => s,
            };
            let failure = match started {
                Err(f) => f,
                Ok(mut stream) => {
                    answered = true;
                    partial.answered = true;
                    loop {
                        let next = tokio::select! {
                            _ = self.cancel.cancelled() => return StepEnd::Aborted(partial),
                            n = stream.next() => n,
                        };
                        match next {
                            Ok(Some(events)) => {
                                for event in events {
                                    self.apply(step, &mut partial, event);
                                }
                            }
                            Ok(None) => return StepEnd::Done(partial),
                            Err(f) => break f,
                        }
                    }
                }
            };
            let wait = retry_wait(&failure, attempt, settings);
            match wait {
                Some(wait) if !partial.delivered && attempt < settings.max_retries => {
                    tracing::info!(run = %self.run_id, attempt, wait_ms = wait.as_millis() as u64, error = %failure, "retrying the provider call");
                    attempt += 1;
                    tokio::select! {
                        _ = self.cancel.cancelled() => return StepEnd::Aborted(partial),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                _ => return StepEnd::Failed(failure, partial),
            }
        }
    }

    fn apply(&self, step: u32, partial: &mut StepResult, event: StreamEvent) {
        match event {
            StreamEvent::TextDelta(text) | StreamEvent::RefusalDelta(text) => {
                if text.is_empty() {
                    return;
                }
                partial.delivered = true;
                partial.text.push_str(&text);
                self.channel.emit(
                    &self.run_id,
                    "text-delta",
                    json!({"step": step, "text": text}),
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                partial.delivered = true;
                let id = if id.is_empty() {
                    format!("call_{}_{index}", self.run_id)
                } else {
                    id
                };
                partial.calls.insert(index, (id, name, String::new()));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some(call) = partial.calls.get_mut(&index) {
                    call.2.push_str(&arguments);
                }
            }
            StreamEvent::Usage(usage) => partial.usage = usage,
            StreamEvent::Finish(reason) => partial.finish = Some(reason),
        }
    }

    /// Runs the step's tool calls concurrently; each result is published as it arrives.
    /// Returns the results in call order and whether the run was aborted meanwhile.
    async fn run_tools(
        &self,
        step: u32,
        tools: &[ExposedTool],
        calls: &[(String, String, String)],
        totals: &mut Totals,
    ) -> (Vec<Part>, bool) {
        // Not for a run already stopped: its session may be being deleted, workspace and all.
        let workspace = if self.cancel.is_cancelled() {
            None
        } else {
            self.host.workspace(&self.session_id)
        };
        let mut pending: FuturesUnordered<_> = calls
            .iter()
            .enumerate()
            .map(|(i, (_, name, arguments))| {
                let workspace = workspace.clone();
                async move {
                    let (content, is_error) = self
                        .call_tool(tools, name, arguments, workspace.as_deref())
                        .await;
                    (i, content, is_error)
                }
            })
            .collect();
        let mut results: Vec<Option<(String, bool)>> = vec![None; calls.len()];
        let mut aborted = false;
        loop {
            let next = tokio::select! {
                _ = self.cancel.cancelled(), if !aborted => { aborted = true; break; }
                n = pending.next() => n,
            };
            let Some((i, content, is_error)) = next else {
                break;
            };
            let (id, name, _) = &calls[i];
            let event = self.channel.reserve(
                &self.run_id,
                "tool-result",
                json!({"step": step, "call_id": id, "name": name, "content": content, "is_error": is_error}),
            );
            self.channel.publish(&event);
            // Stored at once: a client reconnecting while other tools still run replays it.
            self.commit(StepWrite {
                events: vec![event.row()],
                ..self.step()
            })
            .await;
            results[i] = Some((content, is_error));
        }
        drop(pending);
        let mut parts = Vec::new();
        for (i, (id, name, arguments)) in calls.iter().enumerate() {
            // A call without a result would make the vendor reject the next request of this
            // conversation, so an aborted one gets an explicit one.
            let (content, is_error) = results[i]
                .take()
                .unwrap_or_else(|| ("the run was aborted before this tool finished".into(), true));
            totals.tool_calls.push(ToolCallRecord {
                id: id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
                result: content.clone(),
                is_error,
            });
            parts.push(Part::ToolResult {
                call_id: id.clone(),
                content,
                is_error,
            });
        }
        (parts, aborted)
    }

    async fn call_tool(
        &self,
        tools: &[ExposedTool],
        name: &str,
        arguments: &str,
        workspace: Option<&std::path::Path>,
    ) -> (String, bool) {
        let Some(tool) = tools.iter().find(|t| t.spec.name == name) else {
            let names: Vec<&str> = tools.iter().map(|t| t.spec.name.as_str()).collect();
            return (
                format!("no tool named `{name}`; available: {}", names.join(", ")),
                true,
            );
        };
        let arguments = if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        };
        let Some(instance) = &tool.instance else {
            return match tool.tool.as_str() {
                FETCH_ATTACHMENT => self.fetch_attachment(arguments, workspace).await,
                _ => self.load_skill(arguments).await,
            };
        };
        // Each call on a task of its own, so calls of one step run in parallel on the worker
        // threads; dropping the handle (an abort) stops the call at its next await point.
        let runtime = self.host.runtime().clone();
        let (instance, tool_name, input, owner) = (
            instance.clone(),
            tool.tool.clone(),
            arguments.to_owned(),
            self.owner_id.clone(),
        );
        let workspace = workspace.map(std::path::Path::to_path_buf);
        let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            runtime
                .call_tool(&instance, &tool_name, &input, &owner, workspace.as_deref())
                .await
        }));
        match task.await {
            Ok(Ok(output)) => (output, false),
            // The model gets the reason and may correct itself; the run goes on.
            Ok(Err(e)) => (e.to_string(), true),
            Err(e) => (format!("the tool call failed: {e}"), true),
        }
    }

    /// Saves a file a channel received in this session into the session's workspace, and
    /// says where (quoting it when it is short text).
    async fn fetch_attachment(
        &self,
        arguments: &str,
        workspace: Option<&std::path::Path>,
    ) -> (String, bool) {
        let id = serde_json::from_str::<Value>(arguments)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
        let Some(id) = id else {
            return ("fetch_attachment needs {\"id\": \"att-…\"}".into(), true);
        };
        if workspace.is_none() {
            return ("this run has no workspace to save the file in".into(), true);
        }
        let found = match self
            .host
            .db()
            .channel_attachment(&self.session_id, &id)
            .await
        {
            Ok(Some(found)) => found,
            Ok(None) => return (format!("no attachment `{id}` in this conversation"), true),
            Err(e) => return (format!("looking the attachment up failed: {e:#}"), true),
        };
        let (attachment, instance) = found;
        let runtime = self.host.runtime();
        let file = match runtime
            .channel_fetch_file(&instance, &attachment.locator)
            .await
        {
            Ok(file) => file,
            Err(e) => return (format!("fetching the file failed: {e}"), true),
        };
        // The platform's name when it gave a usable one, else the id.
        let name = attachment
            .name
            .as_deref()
            .map(|n| n.replace(['/', '\\', '\0'], "_"))
            .filter(|n| !n.is_empty() && n != "." && n != "..")
            .map(|n| format!("{id}-{n}"))
            .unwrap_or_else(|| id.clone());
        let path = match runtime
            .save_to_session_workspace(&self.session_id, "attachments", &name, &file.bytes)
            .await
        {
            Ok(path) => path,
            Err(e) => return (format!("saving the file failed: {e:#}"), true),
        };
        let mut result = json!({
            "path": path,
            "bytes": file.bytes.len(),
            "kind": attachment.kind,
            "mime_type": attachment.mime_type.or(file.content_type),
        });
        if let Ok(text) = std::str::from_utf8(&file.bytes) {
            let cut = text
                .char_indices()
                .map(|(i, _)| i)
                .take_while(|&i| i <= ATTACHMENT_TEXT_QUOTE)
                .last()
                .unwrap_or(0);
            let quoted = if text.len() <= ATTACHMENT_TEXT_QUOTE {
                text
            } else {
                &text[..cut]
            };
            result["text"] = Value::from(quoted);
            result["text_complete"] = Value::from(quoted.len() == text.len());
        }
        (result.to_string(), false)
    }

    async fn load_skill(&self, arguments: &str) -> (String, bool) {
        let name = serde_json::from_str::<Value>(arguments)
            .ok()
            .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned));
        let Some(name) = name else {
            return ("load_skill needs {\"name\": \"<skill>\"}".into(), true);
        };
        // Saving an agent refuses two skills of one name, but an upgrade can rename a skill
        // afterwards: then neither is picked silently, and the model can ask by plugin name
        // (which is also how the prompt lists such skills).
        let mut found = Vec::new();
        for plugin in &self.agent.skills {
            if let Ok(Some(skill)) = self.host.runtime().skill(plugin).await
                && (skill.name == name || *plugin == name)
            {
                found.push((plugin.as_str(), skill.body));
            }
        }
        match found.len() {
            0 => (
                format!("no skill named `{name}` is enabled for this agent"),
                true,
            ),
            1 => (found.swap_remove(0).1, false),
            _ => (
                format!(
                    "more than one enabled skill is named `{name}` (in {}); load one by its \
                     plugin name",
                    found
                        .iter()
                        .map(|(plugin, _)| *plugin)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                true,
            ),
        }
    }

    async fn tools(&self) -> Result<Vec<ExposedTool>, Failure> {
        self.host.runtime().catch_up().await?;
        let available = self.host.runtime().tools();
        let mut chosen: Vec<(String, ToolSpec)> = Vec::new();
        for entry in &self.agent.tools {
            let Some((instance, tool)) = entry.split_once('/') else {
                continue;
            };
            if let Some((_, spec)) = available
                .iter()
                .find(|(i, s)| i == instance && s.name == tool)
            {
                chosen.push((instance.to_owned(), spec.clone()));
            }
        }
        let mut exposed: Vec<ExposedTool> = Vec::new();
        for (instance, spec) in &chosen {
            // The tool's own name when it is unique, else qualified by its instance; either
            // way within the vendors' `^[a-zA-Z0-9_-]{1,64}$`.
            let clash = chosen.iter().filter(|(_, s)| s.name == spec.name).count() > 1
                || (spec.name == LOAD_SKILL && !self.agent.skills.is_empty());
            let name = if clash {
                let mut q = format!("{instance}__{}", spec.name);
                q.retain(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                q.truncate(64);
                q
            } else {
                spec.name.clone()
            };
            exposed.push(ExposedTool {
                spec: ToolSpec {
                    name,
                    ..spec.clone()
                },
                instance: Some(instance.clone()),
                tool: spec.name.clone(),
            });
        }
        // Only where a channel brought files: other runs are not offered a tool they cannot use.
        if self
            .host
            .db()
            .session_has_attachments(&self.session_id)
            .await?
        {
            exposed.push(ExposedTool {
                spec: ToolSpec {
                    name: FETCH_ATTACHMENT.into(),
                    description: "Save a file the user sent in this chat into your workspace \
                        (under attachments/) by its id (att-…); short text files are quoted in \
                        the result."
                        .into(),
                    input_schema: json!({
                        "type": "object",
                        "properties": {"id": {"type": "string", "description": "The attachment's id, e.g. att-0123456789ab"}},
                        "required": ["id"]
                    })
                    .to_string(),
                },
                instance: None,
                tool: FETCH_ATTACHMENT.into(),
            });
        }
        if !self.agent.skills.is_empty() {
            exposed.push(ExposedTool {
                spec: ToolSpec {
                    name: LOAD_SKILL.into(),
                    description: "Load the full instructions of one of the skills listed in the system prompt.".into(),
                    input_schema: json!({
                        "type": "object",
                        "properties": {"name": {"type": "string", "description": "The skill's name"}},
                        "required": ["name"]
                    })
                    .to_string(),
                },
                instance: None,
                tool: LOAD_SKILL.into(),
            });
        }
        Ok(exposed)
    }

    async fn system_prompt(&self) -> Result<String, Failure> {
        let mut prompt = self.agent.instructions.clone();
        let mut skills = Vec::new();
        for plugin in &self.agent.skills {
            if let Some(skill) = self.host.runtime().skill(plugin).await? {
                skills.push((plugin, skill));
            }
        }
        let mut listed = Vec::new();
        for (plugin, skill) in &skills {
            // A name two of them share (possible only after an upgrade renamed one) is
            // listed by plugin name, which `load_skill` also takes.
            let shared = skills.iter().filter(|(_, s)| s.name == skill.name).count() > 1;
            let name = if shared { plugin.as_str() } else { &skill.name };
            // One line per skill: a block-scalar description may hold line breaks.
            let description = skill.description.split_whitespace().collect::<Vec<_>>();
            listed.push(format!("- {name}: {}", description.join(" ")));
        }
        if !listed.is_empty() {
            prompt.push_str(
                "\n\nSkills you can load with the `load_skill` tool when one fits the task:\n",
            );
            prompt.push_str(&listed.join("\n"));
        }
        Ok(prompt)
    }

    fn take_history(&self) -> Vec<Message> {
        self.history
            .lock()
            .expect("history lock")
            .take()
            .map(Arc::unwrap_or_clone)
            .unwrap_or_default()
    }

    fn context_window(&self) -> u32 {
        self.host
            .runtime()
            .provider_models(&self.agent.provider.plugin)
            .ok()
            .and_then(|models| {
                models
                    .into_iter()
                    .find(|m| m.id == self.agent.provider.model)
                    .and_then(|m| m.context_window)
            })
            .unwrap_or(self.host.settings().default_context_window)
    }
}

/// Renews the run's claim on its session every third of its lease, for as long as the task
/// lives (the run holds it). Stops the run when an abort arrived through another host, or
/// when the claim is gone: the session was deleted, the lease lapsed and the session moved on
/// without this run, or renewals have failed for longer than the lease (another host may have
/// taken the session over meanwhile, and two runs must not write one session).
async fn renew_claim(
    db: crate::store::Db,
    lease_ms: i64,
    session_id: String,
    run_id: String,
    cancel: CancellationToken,
) {
    let lease = Duration::from_millis(lease_ms as u64);
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        match db.renew_claim(&session_id, &run_id, lease_ms).await {
            Ok(Some(abort)) => {
                renewed = tokio::time::Instant::now();
                if abort && !cancel.is_cancelled() {
                    tracing::info!(run = %run_id, "aborting the run: asked through another host");
                    cancel.cancel();
                }
            }
            Ok(None) => {
                tracing::warn!(run = %run_id, session = %session_id, "stopping the run: its session was deleted or taken over");
                cancel.cancel();
                return;
            }
            Err(e) if renewed.elapsed() >= lease => {
                tracing::error!(run = %run_id, error = %format!("{e:#}"), "stopping the run: its session's claim could not be renewed within its lease");
                cancel.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(run = %run_id, error = %format!("{e:#}"), "renewing a session's claim failed")
            }
        }
    }
}

/// How long to wait before retrying `failure`, or `None` if it must not be retried.
fn retry_wait(
    failure: &ProviderFailure,
    attempt: u32,
    settings: &super::AgentSettings,
) -> Option<Duration> {
    if !failure.retryable() {
        return None;
    }
    if let Some(after) = failure.retry_after {
        if u64::from(after) > settings.max_retry_after_s {
            return None;
        }
        return Some(Duration::from_secs(u64::from(after)));
    }
    let base = settings.retry_base_ms.saturating_mul(1 << attempt.min(6));
    // Up to a quarter of jitter, so runs that failed together do not retry together.
    let jitter = rand::random_range(0..=base / 4 + 1);
    Some(Duration::from_millis(base + jitter))
}

/// Gives every tool call a result and drops results without a call: a run cut off by a crash
/// or an abort can leave either, and vendors reject both.
fn repair_tool_pairs(messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    let mut open: Vec<String> = Vec::new();
    for message in messages {
        if message.role != Role::Tool && !open.is_empty() {
            out.push(Message {
                role: Role::Tool,
                content: open
                    .drain(..)
                    .map(|call_id| Part::ToolResult {
                        call_id,
                        content: "no result: the run was interrupted".into(),
                        is_error: true,
                    })
                    .collect(),
            });
        }
        match message.role {
            Role::Assistant => {
                open = message
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolCall { id, .. } => Some(id.clone()),
                        _ => None,
                    })
                    .collect();
                out.push(message);
            }
            Role::Tool => {
                let content: Vec<Part> = message
                    .content
                    .into_iter()
                    .filter(|p| match p {
                        Part::ToolResult { call_id, .. } => {
                            if let Some(i) = open.iter().position(|c| c == call_id) {
                                open.remove(i);
                                true
                            } else {
                                false
                            }
                        }
                        _ => false,
                    })
                    .collect();
                if !content.is_empty() {
                    out.push(Message {
                        role: Role::Tool,
                        content,
                    });
                }
            }
            _ => out.push(message),
        }
    }
    if !open.is_empty() {
        out.push(Message {
            role: Role::Tool,
            content: open
                .drain(..)
                .map(|call_id| Part::ToolResult {
                    call_id,
                    content: "no result: the run was interrupted".into(),
                    is_error: true,
                })
                .collect(),
        });
    }
    out
}

/// The context guard: the system prompt plus as much recent history as fits in `fill` of the
/// window (minus room for the answer). Older turns go first, whole — a turn starts at a user
/// message, so no tool result loses its call — and a note says how many were left out.
fn fit_context(
    system: &str,
    history: &[Message],
    window: u32,
    fill: f64,
    max_tokens: Option<u32>,
) -> Vec<Message> {
    let system_message = Message::text(Role::System, system);
    let reserve = u64::from(max_tokens.unwrap_or(window / 8));
    let allowed = ((f64::from(window) * fill) as u64).saturating_sub(reserve);
    let total: u64 = system_message.estimated_tokens()
        + history.iter().map(Message::estimated_tokens).sum::<u64>();
    let mut start = 0;
    if total > allowed {
        let mut remaining = total;
        // Turn boundaries: user messages. The last one always stays.
        let boundaries: Vec<usize> = history
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == Role::User)
            .map(|(i, _)| i)
            .collect();
        for &b in boundaries.iter().skip(1) {
            if remaining <= allowed {
                break;
            }
            remaining -= history[start..b]
                .iter()
                .map(Message::estimated_tokens)
                .sum::<u64>();
            start = b;
        }
    }
    let mut messages = Vec::with_capacity(history.len() - start + 2);
    if !system.is_empty() {
        messages.push(system_message);
    }
    if start > 0 {
        messages.push(Message::text(
            Role::System,
            format!(
                "[{start} earlier messages of this conversation were left out to fit the model's context window]"
            ),
        ));
    }
    messages.extend_from_slice(&history[start..]);
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> Part {
        Part::ToolCall {
            id: id.into(),
            name: "t".into(),
            arguments: "{}".into(),
        }
    }

    #[test]
    fn dangling_calls_get_results_and_orphan_results_go() {
        let history = vec![
            Message::text(Role::User, "hi"),
            Message {
                role: Role::Assistant,
                content: vec![call("a"), call("b")],
            },
            Message {
                role: Role::Tool,
                content: vec![Part::ToolResult {
                    call_id: "a".into(),
                    content: "1".into(),
                    is_error: false,
                }],
            },
            Message {
                role: Role::Tool,
                content: vec![Part::ToolResult {
                    call_id: "zzz".into(),
                    content: "orphan".into(),
                    is_error: false,
                }],
            },
            Message::text(Role::User, "again"),
        ];
        let fixed = repair_tool_pairs(history);
        let roles: Vec<Role> = fixed.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Tool,
                Role::User
            ]
        );
        assert!(
            matches!(&fixed[3].content[0], Part::ToolResult { call_id, is_error: true, .. } if call_id == "b")
        );
    }

    #[test]
    fn the_guard_drops_whole_old_turns_and_says_so() {
        let long = "x".repeat(4000);
        let mut history = Vec::new();
        for i in 0..10 {
            history.push(Message::text(Role::User, format!("q{i} {long}")));
            history.push(Message::text(Role::Assistant, format!("a{i} {long}")));
        }
        let fitted = fit_context("be brief", &history, 8192, 0.8, Some(512));
        let total: u64 = fitted.iter().map(Message::estimated_tokens).sum();
        assert!(total <= 8192 * 8 / 10, "{total}");
        assert_eq!(fitted[0].role, Role::System);
        assert!(fitted[1].joined_text().contains("earlier messages"));
        assert_eq!(fitted[2].role, Role::User);
        assert!(fitted.last().unwrap().joined_text().starts_with("a9"));
        // Everything fits: nothing is dropped.
        let all = fit_context("be brief", &history[..2], 8192, 0.8, Some(512));
        assert_eq!(all.len(), 3);
    }
}
