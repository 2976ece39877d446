//! Speed of the plugin runtime: compiling, loading from the compile cache, and calling a
//! trivial tool through Kelp's real path, set against wasmtime's own floor for the same call.
//!
//! `cargo bench -p kelp-tests --bench plugin_runtime` prints one table: each figure with its
//! unit, its target and PASS/MISS. A plain binary rather than a statistics harness because the
//! figures that matter most — Kelp's ratio to the bare floor, RSS growth — compare
//! measurements that only mean something when taken in the same process and the same minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kelp::plugins::cache::{CacheOutcome, CompileCache};
use kelp::plugins::engine::build_engine;
use kelp::plugins::{PluginRuntime, RuntimeSettings};
use kelp_tests::{Host, components, manifest};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentType, InstancePre, Lift, Linker, ResourceTable,
};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Cold compiles take seconds each on a small machine; three give a median without eating the
/// time budget.
const COMPILE_RUNS: usize = 3;
const CACHED_LOAD_RUNS: usize = 30;
/// Enough calls that the pool's slots, the allocator and the branch predictors are warm.
const WARM_UP_CALLS: usize = 2_000;
const LATENCY_CALLS: usize = 20_000;
/// Kelp and the floor are measured in alternating blocks of this many calls, so a neighbour's
/// build on the shared machine slows both sides alike instead of skewing the ratio.
const INTERLEAVE_BLOCK: usize = 1_000;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(3);
const RSS_CALLS: usize = 100_000;
const OWNER: &str = "bench";

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // On a worker, like a request in the server, not on the thread that blocks on the runtime.
    runtime.block_on(async { tokio::spawn(run()).await? })
}

async fn run() -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let wasm = std::fs::read(components::COMPONENT_HOSTILE_WASM)
        .context("reading the hostile component (built by tests/build.rs)")?;
    let engine = build_engine(&RuntimeSettings::default())?;
    let mut table = Table::default();

    // 1. Cold compile. Compilation blocks its thread for seconds; move it off the worker the
    // way the runtime itself does.
    let compiles = tokio::task::block_in_place(|| {
        time_each(COMPILE_RUNS, || {
            engine
                .precompile_component(&wasm)
                .map_err(anyhow::Error::from)
        })
    })?;
    table.info(
        "cold compile, precompile_component (median)",
        fmt_duration(median(&compiles)),
    );

    // 2. Cached load from a warm, HMAC-protected compile cache.
    let cache_dir = tempfile::tempdir()?;
    let cache = CompileCache::open(
        &engine,
        &cache_dir.path().join("cache"),
        &cache_dir.path().join("cache.key"),
    )?;
    let sha = kelp::util::sha256_hex(&wasm);
    let (component, first) =
        tokio::task::block_in_place(|| cache.load_or_compile(&engine, &wasm, &sha))?;
    ensure!(
        first == CacheOutcome::Miss,
        "the cache started warm: {first:?}"
    );
    let loads = time_each(CACHED_LOAD_RUNS, || {
        let (component, outcome) = cache.load_or_compile(&engine, &wasm, &sha)?;
        ensure!(outcome == CacheOutcome::Hit, "cache load was a {outcome:?}");
        Ok(component)
    })?;
    let load = median(&loads);
    table.check(
        "cached load, load_or_compile on a warm cache (median)",
        fmt_duration(load),
        "<= 1 ms",
        load <= Duration::from_millis(1),
    );

    // Kelp's real path: a data directory, SQLite, an install with an empty compile cache.
    let host = Host::new().await;
    let started = Instant::now();
    let instance = host
        .install(
            &manifest(components::COMPONENT_HOSTILE_MANIFEST),
            components::COMPONENT_HOSTILE_WASM,
            &[],
            serde_json::json!({}),
        )
        .await?;
    table.info(
        "first install with an empty cache (one run)",
        fmt_duration(started.elapsed()),
    );
    let kelp = Arc::new(Kelp {
        runtime: host.runtime.clone(),
        instance,
    });
    let floor = Arc::new(BareFloor::new(&engine, &component)?);
    let kelp_echo_call = {
        let kelp = kelp.clone();
        move || {
            let kelp = kelp.clone();
            async move { kelp.call("echo").await }
        }
    };
    let floor_echo_call = {
        let floor = floor.clone();
        move || {
            let floor = floor.clone();
            async move { floor.call_echo().await }
        }
    };

    // 3 and 7. Echo through Kelp against the bare floor, warmed, then interleaved.
    for _ in 0..WARM_UP_CALLS {
        kelp.call("echo").await?;
        floor.call_echo().await?;
    }
    let mut kelp_echo = Vec::with_capacity(LATENCY_CALLS);
    let mut floor_echo = Vec::with_capacity(LATENCY_CALLS);
    for _ in 0..LATENCY_CALLS / INTERLEAVE_BLOCK {
        kelp_echo.extend(time_calls(INTERLEAVE_BLOCK, || kelp.call("echo")).await?);
        floor_echo.extend(time_calls(INTERLEAVE_BLOCK, || floor.call_echo()).await?);
    }
    let (kelp_median, kelp_p99) = (median(&kelp_echo), percentile(&kelp_echo, 99));
    let (floor_median, floor_p99) = (median(&floor_echo), percentile(&floor_echo, 99));
    let ratio = kelp_median.as_secs_f64() / floor_median.as_secs_f64();
    table.check(
        "echo via call_tool, median",
        fmt_duration(kelp_median),
        "<= 50 µs",
        kelp_median <= Duration::from_micros(50),
    );
    table.info("echo via call_tool, p99", fmt_duration(kelp_p99));
    table.info(
        "bare wasmtime floor (instantiate + call echo), median",
        fmt_duration(floor_median),
    );
    table.info("bare wasmtime floor, p99", fmt_duration(floor_p99));
    table.check(
        "Kelp / floor, median",
        format!("{ratio:.2}x"),
        "<= 1.5x",
        ratio <= 1.5,
    );

    // 4. One host import per call.
    let now = time_calls(LATENCY_CALLS, || kelp.call("now")).await?;
    table.info("now (one host import), median", fmt_duration(median(&now)));
    table.info(
        "now (one host import), p99",
        fmt_duration(percentile(&now, 99)),
    );

    // 5. Throughput on the multi-thread runtime.
    for callers in [1, 2 * cores, 64] {
        let rate = throughput(callers, kelp_echo_call.clone()).await?;
        let name = format!("throughput, {callers} concurrent caller(s)");
        let value = format!("{rate:.0} calls/s");
        if callers == 1 {
            // One caller keeps at most one core busy; the target is for the machine's worth.
            table.info(&name, value);
        } else {
            table.check(&name, value, ">= 10000 calls/s", rate >= 10_000.0);
        }
    }
    // The floor under the same load tells whether scaling with callers is Kelp's or wasmtime's.
    let floor_rate = throughput(2 * cores, floor_echo_call).await?;
    table.info(
        &format!("bare floor throughput, {} concurrent callers", 2 * cores),
        format!("{floor_rate:.0} calls/s"),
    );

    // 6. Memory: every pool slot has been used by the 64-caller run, so the process is warm.
    let before = rss_kib()?;
    calls_concurrently(RSS_CALLS, 2 * cores, kelp_echo_call).await?;
    let after = rss_kib()?;
    let growth = (after as f64 - before as f64) / before as f64 * 100.0;
    table.info(
        "RSS after warm-up",
        format!("{:.1} MiB", before as f64 / 1024.0),
    );
    table.info(
        &format!("RSS after {RSS_CALLS} more calls"),
        format!("{:.1} MiB", after as f64 / 1024.0),
    );
    table.check(
        "RSS growth over those calls",
        format!("{growth:+.2} %"),
        "<= 5 %",
        growth <= 5.0,
    );

    table.print();
    Ok(())
}

/// The hostile component installed in a real runtime.
struct Kelp {
    runtime: Arc<PluginRuntime>,
    instance: String,
}

impl Kelp {
    async fn call(&self, tool: &str) -> Result<()> {
        self.runtime
            .call_tool(&self.instance, tool, "{}", OWNER, None)
            .await?;
        Ok(())
    }
}

/// Calls per second over a fixed window, with `callers` tasks each calling back to back.
async fn throughput<F>(callers: usize, call: impl Fn() -> F + Clone + Send + 'static) -> Result<f64>
where
    F: Future<Output = Result<()>> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + THROUGHPUT_WINDOW;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut calls = 0u64;
                while Instant::now() < deadline {
                    call().await?;
                    calls += 1;
                }
                anyhow::Ok(calls)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Makes `calls` calls spread over `callers` tasks.
async fn calls_concurrently<F>(
    calls: usize,
    callers: usize,
    call: impl Fn() -> F + Clone + Send + 'static,
) -> Result<()>
where
    F: Future<Output = Result<()>> + Send + 'static,
{
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let call = call.clone();
            let share = calls / callers + usize::from(i < calls % callers);
            tokio::spawn(async move {
                for _ in 0..share {
                    call().await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// What wasmtime alone costs for the same call: the same engine configuration, WASI, a fresh
/// store per call, and none of Kelp's layers (permits, limits, epoch callback, log sink,
/// wall-clock timeout, input check, kv commit).
struct BareFloor {
    engine: Engine,
    pre: InstancePre<BareState>,
    call: ComponentExportIndex,
}

struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `kelp:plugin/types.tool-error`, declared here so the floor needs no bindings of Kelp's.
#[derive(ComponentType, Lift)]
#[component(variant)]
#[allow(dead_code)] // Only ever lifted from the guest and discarded.
enum ToolErr {
    #[component(name = "invalid-input")]
    InvalidInput(String),
    #[component(name = "denied")]
    Denied(String),
    #[component(name = "failed")]
    Failed(String),
}

impl BareFloor {
    fn new(engine: &Engine, component: &Component) -> Result<BareFloor> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        // Echo never reaches a kelp import; stubs let the component link without Kelp's.
        linker
            .define_unknown_imports_as_traps(component)
            .map_err(anyhow::Error::from)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)?;
        let tool = component
            .get_export_index(None, "kelp:plugin/tool@0.1.0")
            .context("the component exports no kelp:plugin/tool@0.1.0")?;
        let call = component
            .get_export_index(Some(&tool), "call")
            .context("kelp:plugin/tool@0.1.0 has no `call`")?;
        Ok(BareFloor {
            engine: engine.clone(),
            pre,
            call,
        })
    }

    async fn call_echo(&self) -> Result<()> {
        let state = BareState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        // The engine interrupts on epochs (Kelp's configuration) but nothing ticks this one,
        // so a deadline one tick away is never reached.
        store.set_epoch_deadline(1);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)?;
        let call = instance
            .get_typed_func::<(&str, &str), (Result<String, ToolErr>,)>(&mut store, &self.call)
            .map_err(anyhow::Error::from)?;
        let (output,) = call
            .call_async(&mut store, ("echo", "{}"))
            .await
            .map_err(anyhow::Error::from)?;
        ensure!(output.is_ok(), "echo returned a tool error");
        Ok(())
    }
}

/// Times each of `runs` calls of `f`. What `f` returns is dropped after the clock stops.
fn time_each<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<Vec<Duration>> {
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            let value = f()?;
            let elapsed = started.elapsed();
            drop(value);
            Ok(elapsed)
        })
        .collect()
}

async fn time_calls<F: Future<Output = Result<()>>>(
    calls: usize,
    mut f: impl FnMut() -> F,
) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        f().await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

fn median(samples: &[Duration]) -> Duration {
    percentile(samples, 50)
}

fn percentile(samples: &[Duration], pct: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
}

fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}

#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn info(&mut self, figure: &str, value: String) {
        self.rows
            .push([figure.to_owned(), value, "—".into(), "info".into()]);
    }

    fn check(&mut self, figure: &str, value: String, target: &str, met: bool) {
        let verdict = if met { "PASS" } else { "MISS" };
        self.rows
            .push([figure.to_owned(), value, target.to_owned(), verdict.into()]);
    }

    fn print(&self) {
        let header = [
            "figure".to_owned(),
            "value".into(),
            "target".into(),
            "result".into(),
        ];
        let width = |col: usize| {
            std::iter::once(&header)
                .chain(&self.rows)
                .map(|row| row[col].chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths = [width(0), width(1), width(2)];
        for row in std::iter::once(&header).chain(&self.rows) {
            println!(
                "{:<w0$}  {:>w1$}  {:<w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            );
        }
    }
}
