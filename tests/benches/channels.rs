//! Channel benchmark: the real Telegram plugin against the fake Bot API on loopback, the real
//! agent loop against an instant fake model vendor, SQLite. Prints
//! - inbound updates handled per second end to end (each from its own chat, each answered),
//! - the host's added latency: from an update reaching the fake to the reply's
//!   `sendMessage` arriving there, one update at a time (p50, p99),
//! - the resident memory of a real `kelp serve` with one Telegram channel polling, idle, and
//!   its slope over the soak (`--soak SECONDS`, default 60; the figure is 600), and
//!   the same server's after a restart.
//!
//! `cargo bench -p kelp-tests --bench channels [-- --soak 600]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use kelp::channels::{Access, ChannelManager, ChannelSettings};
use kelp_tests::agent::setup;
use kelp_tests::process::KelpProcess;
use kelp_tests::server::{Backend, TestServer};
use kelp_tests::telegram::{FakeTelegram, serve_with_channel, telegram_channel};
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};

const TOKEN: &str = "123456:BENCH-token";
const WARM_UP: i64 = 100;
const THROUGHPUT_UPDATES: i64 = 2_000;
const LATENCY_UPDATES: usize = 300;

fn main() {
    let soak = std::env::args()
        .skip_while(|a| a != "--soak")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        in_process().await;
        idle_serve(Duration::from_secs(soak)).await;
    });
}

/// How many `sendMessage` calls the fake received.
fn sends(fake: &FakeTelegram) -> usize {
    fake.calls_of("sendMessage").len()
}

async fn wait_for_sends(fake: &FakeTelegram, n: usize) {
    while sends(fake) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn in_process() {
    let s = TestServer::start(Backend::Sqlite).await;
    let fake = FakeTelegram::start(TOKEN).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    vendor.set_responder(|_| Reply::text("ok"));
    let a = setup(&s, &vendor, "gpt-4o").await;
    let mgr: Arc<ChannelManager> = ChannelManager::new(
        s.state.runtime.clone(),
        s.state.agent.clone(),
        ChannelSettings::default(),
        "bench".into(),
    );
    let channel = telegram_channel(&s, &mgr, &fake, &a.admin, &a.agent_id, Access::Open).await;
    mgr.start(&channel).await.unwrap();

    for chat in 0..WARM_UP {
        fake.push_private_text(1_000_000 + chat, "warm up");
    }
    wait_for_sends(&fake, WARM_UP as usize).await;

    // Throughput: a burst from as many chats, each a new session with one run.
    let before = sends(&fake);
    let started = Instant::now();
    for chat in 0..THROUGHPUT_UPDATES {
        fake.push_private_text(2_000_000 + chat, "hello");
    }
    wait_for_sends(&fake, before + THROUGHPUT_UPDATES as usize).await;
    let elapsed = started.elapsed();
    println!(
        "inbound updates handled end to end: {THROUGHPUT_UPDATES} in {:.2} s = {:.0} updates/s",
        elapsed.as_secs_f64(),
        THROUGHPUT_UPDATES as f64 / elapsed.as_secs_f64()
    );

    // Added latency: one update at a time, from its arrival at the fake to the reply's send.
    let mut latencies = Vec::with_capacity(LATENCY_UPDATES);
    for i in 0..LATENCY_UPDATES {
        let before = sends(&fake);
        let pushed = Instant::now();
        fake.push_private_text(3_000_000 + i as i64, "ping");
        wait_for_sends(&fake, before + 1).await;
        let sent = fake.calls_of("sendMessage")[before].at;
        latencies.push(sent.duration_since(pushed));
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "added latency, update at the fake -> first sendMessage ({LATENCY_UPDATES} sequential, \
         includes the instant vendor's round trip): p50 {:.2} ms, p99 {:.2} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    mgr.shutdown().await;
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A real `kelp serve` (release build of this benchmark's profile) with the first-party
/// plugins and one Telegram channel long-polling the fake: its RSS, idle, over the soak.
async fn idle_serve(soak: Duration) {
    let fake = FakeTelegram::start(TOKEN).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let data = tempfile::tempdir().unwrap();
    let server = KelpProcess::start(env!("CARGO_BIN_EXE_kelp"), data.path(), &[], &[]);
    let pid = server.child.id();
    serve_with_channel(&server.base, &fake, &vendor.base_url()).await;
    // One message through, so everything a conversation needs has been loaded once.
    vendor.set_responder(|_| Reply::text("ok"));
    fake.push_private_text(42, "hello");
    wait_for_sends(&fake, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = rss_kib(pid);
    let started = Instant::now();
    let mut samples = vec![(0.0, first)];
    while started.elapsed() < soak {
        tokio::time::sleep(Duration::from_secs(5).min(soak)).await;
        samples.push((started.elapsed().as_secs_f64(), rss_kib(pid)));
    }
    let last = samples.last().unwrap().1;
    // Least-squares slope over the samples, in KiB per minute.
    let n = samples.len() as f64;
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + *y as f64));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = samples.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (*y as f64 - my), den + (x - mx) * (x - mx))
    });
    let slope = if den > 0.0 { num / den * 60.0 } else { 0.0 };
    println!(
        "kelp serve idle with one Telegram channel polling and the first-party plugins: \
         RSS {:.1} MiB at start, {:.1} MiB after {} s, slope {:+.1} KiB/min ({} polls)",
        first as f64 / 1024.0,
        last as f64 / 1024.0,
        soak.as_secs(),
        slope,
        fake.calls_of("getUpdates").len()
    );

    // The same server restarted, as a configured one usually starts: its channel resumes, one
    // message goes through, then it idles past the allocator's trim interval.
    server.kill_9();
    let server = KelpProcess::start(env!("CARGO_BIN_EXE_kelp"), data.path(), &[], &[]);
    let polls = fake.calls_of("getUpdates").len();
    while fake.calls_of("getUpdates").len() == polls {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fake.push_private_text(43, "hello again");
    wait_for_sends(&fake, 2).await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    println!(
        "the same kelp serve restarted (channel resumed, one message answered), idle 40 s: RSS {:.1} MiB",
        rss_kib(server.child.id()) as f64 / 1024.0
    );
}
