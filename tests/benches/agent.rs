//! Agent-loop benchmark: the host's overhead per step with an instant fake provider on
//! loopback — first one session sending messages one after another, then 1,000 sessions each
//! holding an open SSE stream while messages arrive at a fixed total rate (open loop), with
//! the process's RSS; last, the highest arrival rate that keeps p99 within 100 ms.
//!
//! A step's latency runs from sending the message to reading the run's `finish` event on
//! the session's SSE stream. The fake vendor is instant but not free, so its own time — the
//! same streamed request sent straight to it with the same client — is measured alongside
//! and its median subtracted: what is left is the host's overhead. Server, fake vendor and
//! load generator share this process and this machine's cores, as the issue's targets assume.
//!
//! `cargo bench -p kelp-tests --bench agent` (`-- --one-session` for the first figure only)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kelp::api::http::HttpSettings;
use kelp_tests::agent::{new_session, setup};
use kelp_tests::server::{Backend, TestServer};
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Messages before measuring: the plugin's instance pool, SQLite's page cache and the
/// allocator reach their steady state.
const WARM_UP_MESSAGES: usize = 200;
const SEQUENTIAL_MESSAGES: usize = 2_000;
/// The host and the bare vendor are measured in alternating blocks of this many requests, so
/// a neighbour's build on the shared machine slows both sides alike.
const INTERLEAVE_BLOCK: usize = 200;
/// Messages per conversation in the one-session figure. Every run sends the whole history, so
/// a session that took all 2,000 messages would measure prompts grown to the context window
/// (the provider plugin serialising ~100 KB per step), not the loop; a fresh session every 20
/// turns keeps the prompt the size of an ordinary conversation.
const CONVERSATION_TURNS: usize = 20;
const SESSIONS: usize = 1_000;
const RATE: u32 = 200;
const OPEN_LOOP: Duration = Duration::from_secs(20);
/// Arrival rates tried, each for `PROBE`, until the first whose p99 exceeds `PROBE_P99`.
const PROBE_RATES: &[u32] = &[200, 300, 400, 600, 800, 1_200, 1_600, 2_400, 3_200];
const PROBE: Duration = Duration::from_secs(8);
const PROBE_P99: Duration = Duration::from_millis(100);
/// Keep-alive connections the open-loop generator posts messages on. Posting only waits for
/// the `202`, so a few suffice; more let a stalled server's backlog show as latency rather
/// than as a client-side queue (both count: latency runs from the scheduled time).
const POST_CONNECTIONS: usize = 64;
/// How long an open-loop phase waits for its last runs to finish; later ones count as lost.
const DRAIN: Duration = Duration::from_secs(20);
/// SSE streams, their server ends, the posting connections, the vendor's connections and
/// SQLite: what the process needs open at once, with room to spare.
const FDS_NEEDED: u64 = 2 * SESSIONS as u64 + 4 * POST_CONNECTIONS as u64 + 256;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // On a worker, like the server's own tasks, not on the thread that blocks on the runtime.
    rt.block_on(async { tokio::spawn(run()).await.unwrap() });
}

async fn run() {
    let fds = open_files_limit();
    assert!(
        fds >= FDS_NEEDED,
        "the soft limit on open files is {fds}; this bench holds {SESSIONS} SSE streams and \
         needs {FDS_NEEDED}: raise it (`ulimit -n 4096`) and run again"
    );
    let load_before = load_average();
    // One user holds every stream here, far beyond a person's default allowance.
    let http = HttpSettings {
        max_streams_per_user: SESSIONS + 10,
        ..HttpSettings::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, http).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    vendor.set_fallback(Reply::text("ok"));
    let agent = setup(&server, &vendor, "gpt-4o").await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let token = agent.admin.clone();
    let mut table = Table::default();

    eprintln!("one session: {WARM_UP_MESSAGES} + {SEQUENTIAL_MESSAGES} messages");
    // 1. One session at a time. The warm-up's conversation is recorded at the fake, so the
    // bare-vendor request below is the provider plugin's own, byte for byte.
    let mut conversations = Conversations::new(&server, &addr, &token, &agent.agent_id);
    for _ in 0..WARM_UP_MESSAGES {
        conversations.step().await;
    }
    let requests = vendor.requests();
    let typical = requests
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .nth(CONVERSATION_TURNS / 2)
        .expect("the warm-up reached the vendor")
        .body
        .to_string();
    vendor.set_recording(false);
    let vendor_addr = vendor.addr().to_string();
    let vendor_request = post(
        &vendor_addr,
        "/v1/chat/completions",
        "sk-test-secret",
        &typical,
    );
    let mut to_vendor = Conn::open(&vendor_addr).await;
    for _ in 0..WARM_UP_MESSAGES {
        vendor_call(&mut to_vendor, &vendor_request).await;
    }
    let mut host_steps = Vec::with_capacity(SEQUENTIAL_MESSAGES);
    let mut vendor_calls = Vec::with_capacity(SEQUENTIAL_MESSAGES);
    let mut host_cpu = Duration::ZERO;
    for _ in 0..SEQUENTIAL_MESSAGES / INTERLEAVE_BLOCK {
        let cpu = cpu_time();
        for _ in 0..INTERLEAVE_BLOCK {
            host_steps.push(conversations.step().await);
        }
        host_cpu += cpu_time() - cpu;
        for _ in 0..INTERLEAVE_BLOCK {
            let start = Instant::now();
            vendor_call(&mut to_vendor, &vendor_request).await;
            vendor_calls.push(start.elapsed());
        }
    }
    drop(conversations);
    host_steps.sort();
    vendor_calls.sort();
    let vendor_p50 = percentile(&vendor_calls, 0.5);
    let overhead = |d: Duration| d.saturating_sub(vendor_p50);
    table.info(
        "fake vendor alone, one streamed chat request, p50",
        ms(vendor_p50),
    );
    table.info("  … p99", ms(percentile(&vendor_calls, 0.99)));
    table.info(
        "one session: message → finish on SSE, p50 (vendor included)",
        ms(percentile(&host_steps, 0.5)),
    );
    let single_p50 = overhead(percentile(&host_steps, 0.5));
    table.check(
        "one session: host overhead per step, p50",
        ms(single_p50),
        "<= 1 ms",
        single_p50 <= Duration::from_millis(1),
    );
    table.info(
        "one session: host overhead per step, p99",
        ms(overhead(percentile(&host_steps, 0.99))),
    );
    table.info(
        "one session: CPU time per message, all threads (vendor included)",
        ms(host_cpu / SEQUENTIAL_MESSAGES as u32),
    );

    if std::env::args().any(|a| a == "--one-session") {
        // Only the one-session figure: a quick check while working on the loop's path.
        table.info("load average (1 min) before the bench", load_before);
        table.info("load average (1 min) after the bench", load_average());
        table.print();
        return;
    }

    // 2. 1,000 sessions, each with an open SSE stream, at a fixed arrival rate.
    eprintln!("opening {SESSIONS} sessions' event streams");
    let fleet = Fleet::open(&server, &addr, &token, &agent.agent_id).await;
    eprintln!("{RATE} msg/s for {} s", OPEN_LOOP.as_secs());
    let cpu = cpu_time();
    let at_rate = fleet.open_loop(&addr, RATE, OPEN_LOOP).await;
    let cpu = cpu_time() - cpu;
    let rss = rss_kib();
    let p99 = overhead(at_rate.percentile(0.99));
    table.info(
        &format!("{SESSIONS} sessions, {RATE} msg/s open loop: overhead p50"),
        ms(overhead(at_rate.percentile(0.5))),
    );
    table.check(
        &format!("{SESSIONS} sessions, {RATE} msg/s open loop: overhead p99"),
        ms(p99),
        "<= 20 ms",
        p99 <= Duration::from_millis(20) && at_rate.lost == 0,
    );
    table.check(
        &format!("  … messages lost or refused (of {})", at_rate.sent),
        at_rate.lost.to_string(),
        "0",
        at_rate.lost == 0,
    );
    table.info(
        "  … CPU time per message, all threads (vendor and clients included)",
        ms(cpu / at_rate.sent as u32),
    );
    table.check(
        "  … process RSS (server, fake vendor and clients)",
        format!("{:.1} MiB", rss as f64 / 1024.0),
        "<= 200 MB",
        rss * 1024 <= 200_000_000,
    );

    // 3. The highest rate whose p99 stays within 100 ms.
    let mut highest = None;
    for &rate in PROBE_RATES {
        eprintln!("probing {rate} msg/s");
        // How busy the cores were tells a saturated CPU from a serialised resource.
        let (cpu, wall) = (cpu_time(), Instant::now());
        let probe = fleet.open_loop(&addr, rate, PROBE).await;
        let cores = (cpu_time() - cpu).as_secs_f64() / wall.elapsed().as_secs_f64();
        let p99 = overhead(probe.percentile(0.99));
        let met = probe.lost == 0 && p99 <= PROBE_P99;
        let lost = if probe.lost > 0 {
            format!(", {} lost", probe.lost)
        } else {
            String::new()
        };
        table.info(
            &format!(
                "  probe {rate} msg/s for {} s, {cores:.2} cores busy: overhead p99{lost}",
                PROBE.as_secs()
            ),
            ms(p99),
        );
        if !met {
            break;
        }
        highest = Some(rate);
    }
    table.info(
        &format!(
            "highest arrival rate with overhead p99 <= {} ms",
            PROBE_P99.as_millis()
        ),
        highest.map_or_else(|| format!("< {}", PROBE_RATES[0]), |r| format!("{r} msg/s")),
    );
    table.info("load average (1 min) before the bench", load_before);
    table.info("load average (1 min) after the bench", load_average());
    drop(fleet);
    table.print();
}

/// Sequential messages on one session at a time, a fresh session every
/// [`CONVERSATION_TURNS`] messages.
struct Conversations<'a> {
    server: &'a TestServer,
    addr: &'a str,
    token: &'a str,
    agent_id: &'a str,
    conn: Option<Conn>,
    current: Option<(Vec<u8>, Session)>,
    turns: usize,
}

impl<'a> Conversations<'a> {
    fn new(server: &'a TestServer, addr: &'a str, token: &'a str, agent_id: &'a str) -> Self {
        Conversations {
            server,
            addr,
            token,
            agent_id,
            conn: None,
            current: None,
            turns: 0,
        }
    }

    /// Sends one message and waits for its run's `finish`; the time between the two.
    async fn step(&mut self) -> Duration {
        if self.turns.is_multiple_of(CONVERSATION_TURNS) {
            let id = new_session(self.server, self.token, self.agent_id).await;
            let request = message_request(self.addr, self.token, &id);
            let session = Session::follow(self.addr, self.token, &id).await;
            self.current = Some((request, session));
        }
        self.turns += 1;
        if self.conn.is_none() {
            self.conn = Some(Conn::open(self.addr).await);
        }
        let conn = self.conn.as_mut().expect("opened above");
        let (request, session) = self.current.as_ref().expect("made above");
        let start = Instant::now();
        let run_id = send_message(conn, request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let finished = session
            .finish_of(run_id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        finished.saturating_duration_since(start)
    }
}

/// One session's event stream, read by its own task.
struct Session {
    /// Runs whose `finish` someone waits for.
    waiters: mpsc::UnboundedSender<Waiter>,
    /// A message was sent and its run has not finished: the generator picks another session.
    busy: AtomicBool,
}

/// The run id and where to send the moment its `finish` was read (or why it failed).
type Waiter = (String, oneshot::Sender<Result<Instant, String>>);

impl Session {
    /// Opens `GET /api/sessions/{id}/events` and reads it on a task of its own until the
    /// `Session` is dropped.
    async fn follow(addr: &str, token: &str, id: &str) -> Session {
        let mut conn = Conn::open(addr).await;
        let request = format!(
            "GET /api/sessions/{id}/events HTTP/1.1\r\nhost: {addr}\r\n\
             authorization: Bearer {token}\r\naccept: text/event-stream\r\n\r\n"
        );
        conn.stream.write_all(request.as_bytes()).await.unwrap();
        let head = conn.head().await;
        assert_eq!(head.status, 200, "opening the event stream of {id}");
        assert!(head.chunked, "an SSE response is chunked");
        let (waiters, rx) = mpsc::unbounded_channel();
        tokio::spawn(watch_finishes(conn, rx));
        Session {
            waiters,
            busy: AtomicBool::new(false),
        }
    }

    /// When `run_id`'s terminal event was read from the stream.
    async fn finish_of(&self, run_id: String) -> Result<Instant, String> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .send((run_id, tx))
            .map_err(|_| "the event stream ended".to_owned())?;
        rx.await.map_err(|_| "the event stream ended".to_owned())?
    }
}

/// Reads a session's SSE stream, answering each waiter when its run's `finish` (or `error`)
/// arrives — which may be before the `202` naming the run was read. Only terminal events are
/// parsed as JSON, so the client spends little of the CPU the server is measured on.
async fn watch_finishes(conn: Conn, mut waiters: mpsc::UnboundedReceiver<Waiter>) {
    let Conn {
        mut stream,
        buf: mut raw,
        mut chunk,
    } = conn;
    let mut text = Vec::new();
    let mut pending: HashMap<String, oneshot::Sender<Result<Instant, String>>> = HashMap::new();
    let mut early: HashMap<String, (Instant, Result<(), String>)> = HashMap::new();
    loop {
        let (n, at) = tokio::select! {
            n = stream.read(&mut chunk) => (n.unwrap_or(0), Instant::now()),
            waiter = waiters.recv() => {
                let Some((run_id, tx)) = waiter else { return };
                match early.remove(&run_id) {
                    Some((at, outcome)) => { let _ = tx.send(outcome.map(|()| at)); }
                    None => { pending.insert(run_id, tx); }
                }
                continue;
            }
        };
        if n == 0 {
            // The server closed the stream: everyone waiting learns it from the dropped sender.
            return;
        }
        raw.extend_from_slice(&chunk[..n]);
        dechunk(&mut raw, &mut text);
        while let Some(end) = find(&text, b"\n\n") {
            if let Some((run_id, outcome)) = terminal_event(&text[..end]) {
                match pending.remove(&run_id) {
                    Some(tx) => {
                        let _ = tx.send(outcome.map(|()| at));
                    }
                    None => {
                        early.insert(run_id, (at, outcome));
                    }
                }
            }
            text.drain(..end + 2);
        }
    }
}

/// The run id of a `finish` or `error` event and whether the run completed; `None` for any
/// other event.
fn terminal_event(block: &[u8]) -> Option<(String, Result<(), String>)> {
    let block = std::str::from_utf8(block).ok()?;
    let mut kind = "";
    let mut data = "";
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data = v.trim();
        }
    }
    if kind != "finish" && kind != "error" {
        return None;
    }
    let data: Value = serde_json::from_str(data).ok()?;
    let run_id = data["run_id"].as_str()?.to_owned();
    let completed = kind == "finish" && data["status"] == "completed";
    Some((
        run_id,
        if completed {
            Ok(())
        } else {
            Err(format!("the run ended with {kind}: {data}"))
        },
    ))
}

/// The sessions of the open-loop phase, each following its events.
struct Fleet {
    sessions: Vec<Session>,
    requests: Vec<Vec<u8>>,
}

/// What one open-loop phase measured.
struct OpenLoop {
    /// Scheduled arrival → `finish` read, of every completed run, sorted.
    latencies: Vec<Duration>,
    sent: usize,
    /// Refused, failed, not finished within [`DRAIN`], or not sent for want of an idle session.
    lost: usize,
}

impl OpenLoop {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::MAX;
        }
        percentile(&self.latencies, p)
    }
}

impl Fleet {
    async fn open(server: &TestServer, addr: &str, token: &str, agent_id: &str) -> Arc<Fleet> {
        let mut ids = Vec::with_capacity(SESSIONS);
        for _ in 0..SESSIONS {
            ids.push(new_session(server, token, agent_id).await);
        }
        let opening: Vec<_> = ids
            .iter()
            .map(|id| {
                let (addr, token, id) = (addr.to_owned(), token.to_owned(), id.clone());
                tokio::spawn(async move { Session::follow(&addr, &token, &id).await })
            })
            .collect();
        let mut sessions = Vec::with_capacity(SESSIONS);
        for o in opening {
            sessions.push(o.await.unwrap());
        }
        let requests = ids
            .iter()
            .map(|id| message_request(addr, token, id))
            .collect();
        Arc::new(Fleet { sessions, requests })
    }

    /// Messages at `rate` per second for `duration`, on a schedule fixed in advance: a slow
    /// server cannot slow the arrivals, and each latency runs from its scheduled time, so
    /// time spent queued anywhere — client included — counts.
    async fn open_loop(self: &Arc<Self>, addr: &str, rate: u32, duration: Duration) -> OpenLoop {
        let total = (duration.as_secs_f64() * f64::from(rate)) as usize;
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let lost = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let (jobs, queue) = mpsc::unbounded_channel::<(usize, Instant)>();
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let mut posters = Vec::with_capacity(POST_CONNECTIONS);
        for _ in 0..POST_CONNECTIONS {
            let (fleet, queue, addr) = (self.clone(), queue.clone(), addr.to_owned());
            let (latencies, lost, done) = (latencies.clone(), lost.clone(), done.clone());
            posters.push(tokio::spawn(async move {
                let mut conn = Conn::open(&addr).await;
                loop {
                    let Some((i, scheduled)) = queue.lock().await.recv().await else {
                        return;
                    };
                    let run_id = match send_message(&mut conn, &fleet.requests[i]).await {
                        Ok(run_id) => run_id,
                        Err(e) => {
                            eprintln!("message refused: {e}");
                            fleet.sessions[i].busy.store(false, Ordering::Release);
                            lost.fetch_add(1, Ordering::Relaxed);
                            done.fetch_add(1, Ordering::Release);
                            continue;
                        }
                    };
                    let (fleet, latencies) = (fleet.clone(), latencies.clone());
                    let (lost, done) = (lost.clone(), done.clone());
                    tokio::spawn(async move {
                        let session = &fleet.sessions[i];
                        match session.finish_of(run_id).await {
                            Ok(at) => latencies
                                .lock()
                                .unwrap()
                                .push(at.saturating_duration_since(scheduled)),
                            Err(e) => {
                                eprintln!("run failed: {e}");
                                lost.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        session.busy.store(false, Ordering::Release);
                        done.fetch_add(1, Ordering::Release);
                    });
                }
            }));
        }
        let start = Instant::now() + Duration::from_millis(50);
        let mut next = 0;
        for k in 0..total {
            let scheduled = start + interval * k as u32;
            tokio::time::sleep_until(scheduled.into()).await;
            // Round-robin over the sessions, skipping any whose run is still going (one run
            // per session); at the rates measured that is rare.
            let idle = (0..SESSIONS).map(|j| (next + j) % SESSIONS).find(|&i| {
                self.sessions[i]
                    .busy
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            });
            match idle {
                Some(i) => {
                    next = i + 1;
                    jobs.send((i, scheduled)).unwrap();
                }
                None => {
                    lost.fetch_add(1, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Release);
                }
            }
        }
        drop(jobs);
        let deadline = Instant::now() + DRAIN;
        while done.load(Ordering::Acquire) < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for p in posters {
            p.abort();
        }
        let finished = done.load(Ordering::Acquire);
        // Runs still going would take their sessions into the next phase busy; give them
        // time to end without counting them.
        let deadline = Instant::now() + DRAIN;
        while self.sessions.iter().any(|s| s.busy.load(Ordering::Acquire))
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
        latencies.sort();
        OpenLoop {
            latencies,
            sent: total,
            lost: lost.load(Ordering::Relaxed) + total.saturating_sub(finished),
        }
    }
}

/// `POST /api/sessions/{id}/messages`, ready to write.
fn message_request(addr: &str, token: &str, session: &str) -> Vec<u8> {
    post(
        addr,
        &format!("/api/sessions/{session}/messages"),
        token,
        r#"{"text":"What is the capital of France?"}"#,
    )
}

fn post(addr: &str, path: &str, token: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Posts a message; the run id of its `202`.
async fn send_message(conn: &mut Conn, request: &[u8]) -> Result<String, String> {
    let (status, body) = conn.request(request).await;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (status, body["run_id"].as_str()) {
        (202, Some(run_id)) => Ok(run_id.to_owned()),
        _ => Err(format!("{status} {body}")),
    }
}

/// One streamed chat request straight to the fake vendor, read to the end of the stream.
async fn vendor_call(conn: &mut Conn, request: &[u8]) {
    let (status, body) = conn.request(request).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        body.ends_with(b"data: [DONE]\n\n"),
        "a whole stream: {}",
        String::from_utf8_lossy(&body)
    );
}

/// A lean keep-alive HTTP/1.1 client connection, like one of wrk's: the load generator shares
/// the CPU the server is measured on, so it does as little as it can.
struct Conn {
    stream: TcpStream,
    /// Read but not yet consumed.
    buf: Vec<u8>,
    chunk: Box<[u8]>,
}

struct Head {
    status: u16,
    content_length: usize,
    chunked: bool,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            chunk: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }

    async fn fill(&mut self) {
        let n = self.stream.read(&mut self.chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&self.chunk[..n]);
    }

    /// Reads a response's head, leaving its body in `buf`.
    async fn head(&mut self) -> Head {
        let end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            self.fill().await;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        self.buf.drain(..end + 4);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim_start_matches(':').trim().to_owned())
        };
        Head {
            status,
            content_length: header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            chunked: header("transfer-encoding").is_some_and(|v| v == "chunked"),
        }
    }

    /// Writes `request` and reads the whole response.
    async fn request(&mut self, request: &[u8]) -> (u16, Vec<u8>) {
        self.stream.write_all(request).await.unwrap();
        let head = self.head().await;
        let mut body = Vec::new();
        if head.chunked {
            while !dechunk(&mut self.buf, &mut body) {
                self.fill().await;
            }
        } else {
            while self.buf.len() < head.content_length {
                self.fill().await;
            }
            body = self.buf.drain(..head.content_length).collect();
        }
        (head.status, body)
    }
}

/// Moves every complete chunk of a chunked body from `raw` to `out`; true once the last
/// (empty) chunk was read.
fn dechunk(raw: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    let mut pos = 0;
    let last = loop {
        let Some(eol) = find(&raw[pos..], b"\r\n") else {
            break false;
        };
        let line = std::str::from_utf8(&raw[pos..pos + eol]).expect("a chunk size");
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).expect("a chunk size");
        let start = pos + eol + 2;
        if raw.len() < start + size + 2 {
            break false;
        }
        out.extend_from_slice(&raw[start..start + size]);
        pos = start + size + 2;
        if size == 0 {
            break true;
        }
    };
    raw.drain(..pos);
    last
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    if d == Duration::MAX {
        return "—".into();
    }
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    proc_field("/proc/self/status", "VmRSS:")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// CPU time of the whole process so far, user and system, from `/proc/self/stat` (in clock
/// ticks, 100 per second on Linux builds for x86 and ARM).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces: utime and
    // stime are the 12th and 13th.
    let after = &stat[stat.rfind(')').expect("a command name") + 1..];
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|t| t.parse::<u64>().expect("clock ticks"))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The soft limit on open files.
fn open_files_limit() -> u64 {
    proc_field("/proc/self/limits", "Max open files")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(u64::MAX)
}

fn proc_field(file: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().to_owned())
}

/// The machine's 1-minute load average: other work on the cores makes every figure slower.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
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
        println!("{:<62} {:>12}  {:<10} result", "figure", "value", "target");
        for [figure, value, target, verdict] in &self.rows {
            println!("{figure:<62} {value:>12}  {target:<10} {verdict}");
        }
    }
}
