//! Operator-tunable runtime settings. Every knob has a default and a reason; a plugin's
//! manifest may lower the per-call limits (`[limits]`), never raise them.

use std::time::Duration;

use kelp_registry::manifest::RequestedLimits;
use serde::{Deserialize, Serialize};

/// Limits that apply to one plugin call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallLimits {
    /// Guest CPU time a call may use, in milliseconds. Time the guest spends parked in a host
    /// import (an HTTP request, a kv read) does not count: a tool that waits is not spinning.
    pub timeout_ms: u64,
    /// Wall-clock ceiling around the whole call, waiting included, in milliseconds. Catches a
    /// host import that never returns and bounds how long a caller can be kept waiting.
    pub wall_timeout_ms: u64,
    /// Linear memory a call may grow to, in MiB. A failed grow traps instead of returning -1,
    /// so a runaway allocator ends with a clear "out of memory" rather than undefined guest
    /// behaviour.
    pub memory_mb: u64,
    /// Bytes of log (host `log` plus guest stdout/stderr) kept per call; the rest is dropped
    /// with one note. Keeps a chatty or hostile plugin from flooding the operator's logs.
    pub log_bytes: u64,
    /// Largest tool output accepted, in bytes. Model context is the real consumer, and a
    /// megabyte is already far more than a model can use.
    pub output_bytes: u64,
    /// Largest HTTP response body a plugin may receive through the host, in bytes.
    pub http_response_bytes: u64,
    /// Timeout of one outbound HTTP request made for a plugin, in milliseconds.
    pub http_timeout_ms: u64,
    /// Bytes (keys + values) one plugin instance may keep per owner in `kv`.
    pub kv_quota_bytes: u64,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            wall_timeout_ms: 120_000,
            memory_mb: 128,
            log_bytes: 64 * 1024,
            output_bytes: 1024 * 1024,
            http_response_bytes: 10 * 1024 * 1024,
            http_timeout_ms: 30_000,
            kv_quota_bytes: 10 * 1024 * 1024,
        }
    }
}

impl CallLimits {
    /// The limits for one plugin: the operator's values, lowered where the manifest asks.
    pub fn lowered_by(&self, requested: &RequestedLimits) -> CallLimits {
        let lower = |own: u64, req: Option<u64>| req.map_or(own, |r| r.min(own));
        CallLimits {
            timeout_ms: lower(self.timeout_ms, requested.timeout_ms),
            memory_mb: lower(self.memory_mb, requested.memory_mb),
            log_bytes: lower(self.log_bytes, requested.log_bytes),
            output_bytes: lower(self.output_bytes, requested.output_bytes),
            ..self.clone()
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn wall_timeout(&self) -> Duration {
        Duration::from_millis(self.wall_timeout_ms)
    }

    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }
}

/// Settings of the plugin runtime as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// How many plugin calls may run at once. The pooling allocator's slots are derived from
    /// this one number, and callers beyond it wait in a queue instead of failing: the pool's
    /// own defaults would refuse the ~334th concurrent call outright. Provider streams, which
    /// hold a slot for as long as a model answers, may take all but a quarter of them, so
    /// tool calls always find room.
    pub max_concurrent_plugin_calls: u32,
    /// Epoch tick in milliseconds: how often a running guest yields to the async runtime and
    /// its time budget is checked. 10 ms keeps other tasks' latency low at negligible cost.
    pub epoch_tick_ms: u64,
    /// Wasm stack a guest may use, in KiB. Deep enough for real parsers, small enough that
    /// runaway recursion traps quickly.
    pub max_wasm_stack_kib: u64,
    /// Most bytes of files one workspace (a session's, or a user's for direct tool calls) may
    /// hold, enforced on plugins' writes: a write that would pass it fails in the plugin with
    /// "No space left on device". Workspaces live on the host's disk, shared by every user;
    /// 0 turns the quota off.
    pub workspace_quota_bytes: u64,
    /// Tool calls one owner (a user) may have running at once; more wait for their own. Keeps
    /// one user's burst of slow calls from taking every slot while other users' calls queue.
    pub max_plugin_calls_per_user: u32,
    /// Default limits for each call; also the ceiling a manifest cannot exceed.
    pub limits: CallLimits,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            max_concurrent_plugin_calls: 64,
            epoch_tick_ms: 10,
            max_wasm_stack_kib: 1024,
            workspace_quota_bytes: 1024 * 1024 * 1024,
            max_plugin_calls_per_user: 16,
            limits: CallLimits::default(),
        }
    }
}
