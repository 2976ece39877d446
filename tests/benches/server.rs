//! Server benchmark: requests/s and p99 latency of an authenticated list endpoint (a user with
//! 1,000 sessions, pages of 50) at 64 concurrent connections, on SQLite and on PostgreSQL; and
//! the resident memory of an idle `kelp serve` that loaded the first-party plugins from a warm
//! compile cache. The load generator runs on the same machine (2 cores here), as the issue's
//! targets assume.
//!
//! `cargo bench -p kelp-tests --bench server`

use std::time::{Duration, Instant};

use kelp_tests::process::KelpProcess;
use kelp_tests::server::{Backend, TestServer};
use kelp_tests::{components as c, manifest, pack};
use serde_json::json;

const CONNECTIONS: usize = 64;
const SESSIONS: usize = 1000;
const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(8);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn list_endpoint(backend: Backend) -> (f64, Duration, Duration) {
    let server = TestServer::start(backend).await;
    let admin = server.setup_admin().await;
    let token = server.user("bench").await;
    let _ = admin;
    // 1,000 sessions, created through the API like a real user would.
    for i in 0..SESSIONS {
        let (status, body) = server
            .send(
                "POST",
                "/api/sessions",
                Some(&token),
                Some(json!({"title": format!("session {i}")})),
            )
            .await;
        assert!(status.is_success(), "creating session {i}: {status} {body}");
    }
    let addr = server.base.trim_start_matches("http://").to_owned();
    let request = format!(
        "GET /api/sessions?limit=50 HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    let run = |duration: Duration| {
        let (addr, request) = (addr.clone(), request.clone());
        async move {
            let deadline = Instant::now() + duration;
            let workers: Vec<_> = (0..CONNECTIONS)
                .map(|_| {
                    let (addr, request) = (addr.clone(), request.clone());
                    tokio::spawn(
                        async move { connection(&addr, request.as_bytes(), deadline).await },
                    )
                })
                .collect();
            let mut all = Vec::new();
            for w in workers {
                all.extend(w.await.unwrap());
            }
            all
        }
    };
    run(WARMUP).await;
    let started = Instant::now();
    let mut latencies = run(MEASURE).await;
    let elapsed = started.elapsed();
    latencies.sort();
    (
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    )
}

/// One keep-alive HTTP/1.1 connection sending `request` until `deadline`, like one of wrk's
/// connections: a lean client, so the load generator takes as little as possible of the CPU
/// the server is measured on. Checks each response is a 200 with a real page.
async fn connection(addr: &str, request: &[u8], deadline: Instant) -> Vec<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let start = Instant::now();
        stream.write_all(request).await.unwrap();
        buf.clear();
        let (head_len, body_len) = loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end])
                    .unwrap()
                    .to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .expect("content-length");
                break (end + 4, len);
            }
        };
        while buf.len() < head_len + body_len {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
        assert!(body_len > 1000, "a page of 50 sessions");
        latencies.push(start.elapsed());
    }
    latencies
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn idle_rss() -> u64 {
    let data = tempfile::tempdir().unwrap();
    let bundled = tempfile::tempdir().unwrap();
    std::fs::write(
        bundled.path().join("calc.kelp"),
        pack(&manifest(c::PLUGIN_CALC_MANIFEST), c::PLUGIN_CALC_WASM),
    )
    .unwrap();
    std::fs::write(
        bundled.path().join("http-fetch.kelp"),
        pack(
            &manifest(c::PLUGIN_HTTP_FETCH_MANIFEST),
            c::PLUGIN_HTTP_FETCH_WASM,
        ),
    )
    .unwrap();
    let args = ["--bundled", bundled.path().to_str().unwrap()];
    // First start installs the plugins and fills the compile cache...
    KelpProcess::start(env!("CARGO_BIN_EXE_kelp"), data.path(), &args, &[]).kill_9();
    // ...the second loads them from the warm cache, like every later start.
    let server = KelpProcess::start(env!("CARGO_BIN_EXE_kelp"), data.path(), &args, &[]);
    std::thread::sleep(Duration::from_secs(2));
    rss_kib(server.child.id())
}

fn row(figure: &str, value: String, target: &str, pass: Option<bool>) {
    let result = match pass {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "info",
    };
    println!("{figure:<58} {value:>14}  {target:<16} {result}");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{:<58} {:>14}  {:<16} result", "figure", "value", "target");
    for (name, backend) in [
        ("SQLite", Backend::Sqlite),
        ("PostgreSQL", Backend::Postgres),
    ] {
        let (rps, p50, p99) = rt.block_on(list_endpoint(backend));
        let sqlite = backend == Backend::Sqlite;
        row(
            &format!("GET /api/sessions?limit=50, {CONNECTIONS} conns, {name}: req/s"),
            format!("{rps:.0}"),
            if sqlite { ">= 5000" } else { "—" },
            sqlite.then_some(rps >= 5000.0),
        );
        row(
            &format!("  … p50 latency ({name})"),
            format!("{:.2} ms", p50.as_secs_f64() * 1e3),
            "—",
            None,
        );
        row(
            &format!("  … p99 latency ({name})"),
            format!("{:.2} ms", p99.as_secs_f64() * 1e3),
            if sqlite { "<= 50 ms" } else { "—" },
            sqlite.then_some(p99 <= Duration::from_millis(50)),
        );
    }
    let rss = idle_rss();
    row(
        "idle RSS of kelp serve, first-party plugins, warm cache",
        format!("{:.1} MiB", rss as f64 / 1024.0),
        "<= 30 MB",
        Some(rss * 1024 <= 30_000_000),
    );
}
