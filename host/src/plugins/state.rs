//! The per-call store data (`CallState`) and the host imports every plugin gets.
//!
//! Each import that may wait (kv, http) records the time it spent, so the epoch callback can
//! charge a plugin for its own computation only.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::contract::v0_2_0::{host_import, http_import, kv_import, types};
use super::workspace::WorkspaceQuota;
use super::{InstanceContext, WorkspaceAccess};
use crate::net::{OutboundError, OutboundRequest};
use crate::store::plugins::KvWrites;

/// Longest key a plugin may use in `kv`.
const KV_MAX_KEY: usize = 512;
/// Largest single `kv` value.
const KV_MAX_VALUE: usize = 1024 * 1024;

/// Everything one call's `Store` holds.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) instance: Arc<InstanceContext>,
    owner: String,
    pub(super) clock: GuestClock,
    pub(super) log: LogSink,
    kv: KvTxn,
    /// The quota of the workspace this call may write, if it may write one.
    pub(super) workspace_quota: Option<WorkspaceQuota>,
}

/// Guest time = wall time since the call started minus time spent inside Kelp's host imports
/// (kv, http). Waiting the guest chose itself — a sleep through WASI's clocks — is not a host
/// import of Kelp's and counts as guest time.
///
/// Shared (a cheap clone) between the store, whose epoch callback stops a computing guest, and
/// [`within_budget`], which stops a guest parked in a WASI wait: the epoch callback runs only
/// while wasm code runs, so it never sees a guest that sleeps.
#[derive(Clone)]
pub struct GuestClock {
    state: Arc<Mutex<ClockState>>,
    pub budget: Duration,
}

struct ClockState {
    started: Instant,
    /// Time spent in host imports that have returned.
    in_host: Duration,
    /// When the host import running now started.
    host_since: Option<Instant>,
}

/// How often [`GuestClock::exhausted`] looks again at most: while the guest waits in a host
/// import its budget stands still, and waking for the last millisecond of it on every check
/// would spin.
const MIN_BUDGET_CHECK: Duration = Duration::from_millis(10);

impl GuestClock {
    fn new(budget: Duration) -> GuestClock {
        GuestClock {
            state: Arc::new(Mutex::new(ClockState {
                started: Instant::now(),
                in_host: Duration::ZERO,
                host_since: None,
            })),
            budget,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn guest_time(&self) -> Duration {
        let state = self.state();
        let in_host = state.in_host + state.host_since.map_or(Duration::ZERO, |t| t.elapsed());
        state.started.elapsed().saturating_sub(in_host)
    }

    fn restart(&self) {
        let mut state = self.state();
        state.started = Instant::now();
        state.in_host = Duration::ZERO;
        state.host_since = None;
    }

    /// Marks the time until the guard drops as the host's (also when the call is dropped
    /// mid-import).
    pub(super) fn enter_host(&self) -> HostWait<'_> {
        self.state().host_since = Some(Instant::now());
        HostWait(self)
    }

    /// Resolves once guest time passes the budget.
    pub async fn exhausted(&self) {
        loop {
            let left = self.budget.saturating_sub(self.guest_time());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.max(MIN_BUDGET_CHECK)).await;
        }
    }
}

/// Time in a host import, charged to the host when dropped.
pub(super) struct HostWait<'a>(&'a GuestClock);

impl Drop for HostWait<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        if let Some(since) = state.host_since.take() {
            state.in_host += since.elapsed();
        }
    }
}

/// Runs one guest call (instantiation, an export) until it ends or its guest time passes the
/// budget, wherever the guest is then: computing (the epoch callback traps it) or waiting in a
/// WASI call such as a sleep (dropped here). Either way the error is `Trap::Interrupt`, which
/// callers report as the time-budget error.
pub(super) async fn within_budget<T>(
    clock: GuestClock,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    tokio::select! {
        out = call => out,
        () = clock.exhausted() => Err(wasmtime::Error::from(wasmtime::Trap::Interrupt)),
    }
}

impl CallState {
    pub fn new(
        instance: Arc<InstanceContext>,
        owner: &str,
        workspace: Option<&std::path::Path>,
        workspace_quota: Option<WorkspaceQuota>,
    ) -> anyhow::Result<CallState> {
        let limits = &instance.limits;
        let log = LogSink::new(instance.clone(), limits.log_bytes);
        let mut wasi = WasiCtxBuilder::new();
        // No environment, arguments, network or inherited stdio: the guest gets only what
        // its grants say. stdout/stderr go to the same capped, redacted log as `host.log`.
        wasi.stdout(log.clone()).stderr(log.clone());
        if let (Some(dir), true) = (
            workspace,
            instance.grants.workspace != WorkspaceAccess::None,
        ) {
            let perms = match instance.grants.workspace {
                WorkspaceAccess::Write => FsPerms::ReadWrite,
                _ => FsPerms::ReadOnly,
            };
            wasi.preopened_dir(dir, "/workspace", perms)?;
        }
        Ok(CallState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes())
                .trap_on_grow_failure(true)
                .build(),
            owner: owner.to_owned(),
            clock: GuestClock::new(limits.timeout()),
            log,
            kv: KvTxn::default(),
            workspace_quota,
            instance,
        })
    }

    /// Starts a new computation budget: a store that outlives one guest call (a provider's
    /// decoder) must not be charged for the time between calls.
    pub fn restart_clock(&mut self) {
        self.clock.restart();
    }

    /// Commits the call's buffered kv writes; called only after the call succeeded.
    pub async fn commit_kv(&mut self) -> Result<(), String> {
        let Some(writes) = self.take_kv() else {
            return Ok(());
        };
        match self.instance.db.kv_commit(&writes).await {
            Ok(applied) => applied.into_result(writes.quota),
            Err(e) => Err(format!("kv: commit failed: {e:#}")),
        }
    }

    /// The call's buffered kv writes, for the caller to apply with what else the call's
    /// result makes it store (a channel's batch of events); `None` if it wrote nothing.
    pub fn take_kv(&mut self) -> Option<KvWrites> {
        if self.kv.writes.is_empty() {
            return None;
        }
        Some(KvWrites {
            instance_id: self.instance.instance_id.clone(),
            owner: self.owner.clone(),
            expectations: std::mem::take(&mut self.kv.expectations),
            writes: std::mem::take(&mut self.kv.writes).into_iter().collect(),
            quota: self.instance.limits.kv_quota_bytes,
        })
    }

    fn kv_denied(&self) -> Option<kv_import::KvError> {
        (!self.instance.grants.kv).then(|| {
            kv_import::KvError::Denied(format!(
                "capability `kv` is not granted to plugin instance `{}`",
                self.instance.instance_id
            ))
        })
    }

    /// Runs a host-side wait and charges its duration to the host, not the guest.
    async fn in_host<T>(&mut self, work: impl Future<Output = T>) -> T {
        let clock = self.clock.clone();
        let _waiting = clock.enter_host();
        work.await
    }

    async fn kv_current(
        &mut self,
        key: &str,
    ) -> Result<(Option<Vec<u8>>, bool), kv_import::KvError> {
        if let Some(value) = self.kv.writes.get(key) {
            return Ok((value.clone(), true));
        }
        let instance = self.instance.clone();
        let owner = self.owner.clone();
        let value = self
            .in_host(instance.db.kv_get(&instance.instance_id, &owner, key))
            .await
            .map_err(|e| kv_import::KvError::Invalid(format!("kv read failed: {e}")))?;
        Ok((value, false))
    }

    fn kv_check(key: &str, value: Option<&[u8]>) -> Result<(), kv_import::KvError> {
        if key.is_empty() || key.len() > KV_MAX_KEY {
            return Err(kv_import::KvError::Invalid(format!(
                "kv keys are 1..={KV_MAX_KEY} bytes"
            )));
        }
        if value.is_some_and(|v| v.len() > KV_MAX_VALUE) {
            return Err(kv_import::KvError::Invalid(format!(
                "kv values are at most {KV_MAX_VALUE} bytes"
            )));
        }
        Ok(())
    }

    /// Refuses a write that would obviously break the quota, so the guest learns at `set`
    /// rather than when its call's commit fails. The commit re-checks exactly.
    async fn kv_precheck_quota(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), kv_import::KvError> {
        let quota = self.instance.limits.kv_quota_bytes;
        if self.kv.stored_usage.is_none() {
            let instance = self.instance.clone();
            let owner = self.owner.clone();
            let used = self
                .in_host(instance.db.kv_usage(&instance.instance_id, &owner))
                .await
                .map_err(|e| kv_import::KvError::Invalid(format!("kv read failed: {e}")))?;
            self.kv.stored_usage = Some(used);
        }
        // What a key occupies in the database now, learnt once per key: a buffered write
        // replaces that, it does not add to it.
        if !self.kv.stored_sizes.contains_key(key) {
            let instance = self.instance.clone();
            let owner = self.owner.clone();
            let stored = self
                .in_host(instance.db.kv_get(&instance.instance_id, &owner, key))
                .await
                .map_err(|e| kv_import::KvError::Invalid(format!("kv read failed: {e}")))?;
            let size = stored.map_or(0, |v| (key.len() + v.len()) as u64);
            self.kv.stored_sizes.insert(key.to_owned(), size);
        }
        let size = |k: &str, v: Option<&[u8]>| v.map_or(0, |v| (k.len() + v.len()) as u64);
        let mut projected = self.kv.stored_usage.unwrap_or(0);
        for (k, v) in self.kv.writes.iter().filter(|(k, _)| k.as_str() != key) {
            projected = projected
                - self
                    .kv
                    .stored_sizes
                    .get(k)
                    .copied()
                    .unwrap_or(0)
                    .min(projected)
                + size(k, v.as_deref());
        }
        projected = projected - self.kv.stored_sizes[key].min(projected) + size(key, value);
        if projected > quota {
            return Err(kv_import::KvError::QuotaExceeded(quota));
        }
        Ok(())
    }
}

/// Writes buffered during one call; applied by [`CallState::commit_kv`].
#[derive(Default)]
struct KvTxn {
    writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Values read from the database by compare-and-swap, re-checked at commit so two
    /// concurrent calls cannot both win the same swap.
    expectations: Vec<(String, Option<Vec<u8>>)>,
    stored_usage: Option<u64>,
    /// Bytes each key written in this call occupied in the database before the call.
    stored_sizes: std::collections::HashMap<String, u64>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for CallState {}

impl host_import::Host for CallState {
    async fn log(&mut self, level: host_import::LogLevel, message: String) -> wasmtime::Result<()> {
        let level = match level {
            host_import::LogLevel::Trace => tracing::Level::TRACE,
            host_import::LogLevel::Debug => tracing::Level::DEBUG,
            host_import::LogLevel::Info => tracing::Level::INFO,
            host_import::LogLevel::Warn => tracing::Level::WARN,
            host_import::LogLevel::Error => tracing::Level::ERROR,
        };
        self.log.line(level, &message);
        Ok(())
    }

    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0))
    }

    async fn config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.instance.config.get(&key).map(|v| v.to_string()))
    }
}

impl kv_import::Host for CallState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv_import::KvError>> {
        if let Some(denied) = self.kv_denied() {
            return Ok(Err(denied));
        }
        if let Err(e) = Self::kv_check(&key, None) {
            return Ok(Err(e));
        }
        Ok(self.kv_current(&key).await.map(|(v, _)| v))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv_import::KvError>> {
        if let Some(denied) = self.kv_denied() {
            return Ok(Err(denied));
        }
        if let Err(e) = Self::kv_check(&key, Some(&value)) {
            return Ok(Err(e));
        }
        if let Err(e) = self.kv_precheck_quota(&key, Some(&value)).await {
            return Ok(Err(e));
        }
        self.kv.writes.insert(key, Some(value));
        Ok(Ok(()))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), kv_import::KvError>> {
        if let Some(denied) = self.kv_denied() {
            return Ok(Err(denied));
        }
        if let Err(e) = Self::kv_check(&key, None) {
            return Ok(Err(e));
        }
        self.kv.writes.insert(key, None);
        Ok(Ok(()))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<bool, kv_import::KvError>> {
        if let Some(denied) = self.kv_denied() {
            return Ok(Err(denied));
        }
        if let Err(e) = Self::kv_check(&key, new.as_deref()) {
            return Ok(Err(e));
        }
        let (current, buffered) = match self.kv_current(&key).await {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        if current != expected {
            return Ok(Ok(false));
        }
        if let Err(e) = self.kv_precheck_quota(&key, new.as_deref()).await {
            return Ok(Err(e));
        }
        if !buffered {
            self.kv.expectations.push((key.clone(), current));
        }
        self.kv.writes.insert(key, new);
        Ok(Ok(true))
    }

    async fn list_keys(
        &mut self,
        prefix: String,
    ) -> wasmtime::Result<Result<Vec<String>, kv_import::KvError>> {
        if let Some(denied) = self.kv_denied() {
            return Ok(Err(denied));
        }
        let instance = self.instance.clone();
        let owner = self.owner.clone();
        let stored = match self
            .in_host(instance.db.kv_keys(&instance.instance_id, &owner, &prefix))
            .await
        {
            Ok(keys) => keys,
            Err(e) => {
                return Ok(Err(kv_import::KvError::Invalid(format!(
                    "kv read failed: {e}"
                ))));
            }
        };
        let mut keys: std::collections::BTreeSet<String> = stored.into_iter().collect();
        for (key, value) in &self.kv.writes {
            if key.starts_with(&prefix) {
                if value.is_some() {
                    keys.insert(key.clone());
                } else {
                    keys.remove(key);
                }
            }
        }
        Ok(Ok(keys.into_iter().collect()))
    }
}

impl http_import::Host for CallState {
    async fn send(
        &mut self,
        req: types::HttpRequest,
    ) -> wasmtime::Result<Result<types::HttpResponse, types::HttpError>> {
        let Some(client) = self.instance.outbound.clone() else {
            return Ok(Err(types::HttpError::Denied(format!(
                "capability `http` is not granted to plugin instance `{}`",
                self.instance.instance_id
            ))));
        };
        let request = OutboundRequest {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
        };
        let result = self.in_host(client.send(request)).await;
        Ok(match result {
            // A bound host that echoes the request (an error page quoting the authorization
            // header, a debug endpoint) would otherwise hand the guest the very value it must
            // never see.
            Ok(resp) => {
                let redactor = &self.instance.redactor;
                Ok(types::HttpResponse {
                    status: resp.status,
                    headers: resp
                        .headers
                        .into_iter()
                        .map(|(name, value)| (name, redactor.redact(&value).into_owned()))
                        .collect(),
                    body: redactor.redact_bytes(resp.body),
                })
            }
            Err(e) => {
                let text = self.instance.redactor.redact(&e.to_string()).into_owned();
                Err(match e {
                    OutboundError::Denied(_) => types::HttpError::Denied(text),
                    OutboundError::InvalidRequest(_) => types::HttpError::InvalidRequest(text),
                    OutboundError::Timeout => types::HttpError::Timeout,
                    OutboundError::TooLarge(cap) => types::HttpError::TooLarge(cap),
                    OutboundError::Connection(_) => types::HttpError::Connection(text),
                })
            }
        })
    }
}

/// The capped, redacted log of one call: `host.log` lines and the guest's stdout/stderr.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<Mutex<LogSinkInner>>,
    instance: Arc<InstanceContext>,
}

struct LogSinkInner {
    remaining: u64,
    dropped: u64,
    partial: Vec<u8>,
}

impl LogSink {
    fn new(instance: Arc<InstanceContext>, budget: u64) -> LogSink {
        LogSink {
            inner: Arc::new(Mutex::new(LogSinkInner {
                remaining: budget,
                dropped: 0,
                partial: Vec::new(),
            })),
            instance,
        }
    }

    /// Emits one line if the budget allows; otherwise counts it as dropped.
    pub fn line(&self, level: tracing::Level, message: &str) {
        let mut inner = self.inner.lock().expect("log sink lock");
        let len = message.len() as u64;
        if len > inner.remaining {
            inner.dropped += len;
            inner.remaining = 0;
            return;
        }
        inner.remaining -= len;
        drop(inner);
        self.emit(level, message);
    }

    fn emit(&self, level: tracing::Level, message: &str) {
        let message = self.instance.redactor.redact(message);
        let plugin = self.instance.plugin.as_str();
        let instance = self.instance.instance_id.as_str();
        macro_rules! at {
            ($lvl:ident) => {
                tracing::$lvl!(target: "kelp::plugin", plugin, instance, "{message}")
            };
        }
        match level {
            tracing::Level::TRACE => at!(trace),
            tracing::Level::DEBUG => at!(debug),
            tracing::Level::INFO => at!(info),
            tracing::Level::WARN => at!(warn),
            tracing::Level::ERROR => at!(error),
        }
    }

    fn write_output(&self, bytes: &[u8]) {
        let mut lines = Vec::new();
        {
            let mut inner = self.inner.lock().expect("log sink lock");
            inner.partial.extend_from_slice(bytes);
            while let Some(pos) = inner.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = inner.partial.drain(..=pos).collect();
                lines.push(line);
            }
            // A guest printing without newlines must not grow the buffer without bound.
            if inner.partial.len() > 4096 {
                let line = std::mem::take(&mut inner.partial);
                lines.push(line);
            }
        }
        for line in lines {
            let text = String::from_utf8_lossy(&line);
            self.line(tracing::Level::INFO, text.trim_end_matches(['\n', '\r']));
        }
    }

    /// Flushes a trailing partial line and reports dropped bytes; called at the end of a call.
    pub fn finish(&self) -> u64 {
        let partial = std::mem::take(&mut self.inner.lock().expect("log sink lock").partial);
        if !partial.is_empty() {
            self.line(tracing::Level::INFO, &String::from_utf8_lossy(&partial));
        }
        let dropped = self.inner.lock().expect("log sink lock").dropped;
        if dropped > 0 {
            self.emit(
                tracing::Level::WARN,
                &format!("log limit reached: {dropped} bytes of this call's log were dropped"),
            );
        }
        dropped
    }
}

impl IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogSink {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for LogSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // Accept everything: past the budget bytes are counted and dropped rather than
        // failing the write, which would turn a chatty plugin's println! into a panic.
        self.write_output(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
