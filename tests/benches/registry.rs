//! Registry benchmark: search latency (p50, p99) of a real `kelp-registry serve` holding
//! 10,000 synthetic packages, on SQLite and on PostgreSQL, one client on loopback sending
//! queries one after another (a mix: one word, two words, a prefix, an exact name, a kind
//! filter, a tag filter, a second page, the empty query). The packages are published
//! through the API with signed statements, as publishers would.
//!
//! `cargo bench -p kelp-tests --bench registry` (add `-- --packages N` for another count)
//!
//! The second figure, the time to install a 1 MB plugin, needs the host's registry
//! client, which is not built yet.

use std::time::{Duration, Instant};

use kelp_tests::registry::{Publisher, RegistryProcess, Store, publish_body, skill_package};

const QUERIES: usize = 2000;
const WORDS: &[&str] = &[
    "weather",
    "calendar",
    "mail",
    "search",
    "notes",
    "translate",
    "summarize",
    "code",
    "review",
    "git",
    "docker",
    "sql",
    "chart",
    "pdf",
    "image",
    "audio",
    "music",
    "news",
    "finance",
    "stock",
    "crypto",
    "health",
    "fitness",
    "recipe",
    "travel",
    "maps",
    "todo",
    "slack",
    "github",
    "jira",
    "email",
    "invoice",
    "tax",
    "legal",
    "contract",
    "poetry",
    "haiku",
    "story",
    "math",
    "physics",
    "chemistry",
    "biology",
    "history",
    "language",
    "spanish",
    "french",
    "german",
    "japanese",
    "chess",
    "game",
];

/// A deterministic pseudo-random sequence (the same catalogue on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % below
    }
    fn word(&mut self) -> &'static str {
        WORDS[self.next(WORDS.len())]
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn run(store: Store, packages: usize) {
    let registry = RegistryProcess::start_with(
        env!("CARGO_BIN_EXE_kelp-registry"),
        store,
        &["--publishes-per-hour", "100000"],
    )
    .await;
    let publishers = [
        Publisher::new(&registry, "alice", "acme").await,
        Publisher::new(&registry, "bob", "tools").await,
    ];
    let mut rng = Lcg(7);
    let started = Instant::now();
    let mut names = Vec::with_capacity(packages);
    for i in 0..packages {
        let publisher = &publishers[i % 2];
        let namespace = publisher.log.namespace();
        let name = format!("{namespace}/{}-{}-{i}", rng.word(), rng.word());
        let description = (0..8).map(|_| rng.word()).collect::<Vec<_>>().join(" ");
        let tags = [rng.word(), rng.word()];
        let tags: Vec<&str> = if tags[0] == tags[1] {
            vec![tags[0]]
        } else {
            tags.to_vec()
        };
        let package = skill_package(&name, "1.0.0", &description, &tags);
        let (status, body) = registry
            .post(
                "/api/v1/publish",
                Some(&publisher.token),
                &publish_body(&package, &publisher.key),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        names.push(name);
    }
    let publishing = started.elapsed();

    let mut queries = Vec::with_capacity(QUERIES);
    for i in 0..QUERIES {
        let query = match i % KINDS.len() {
            0 => format!("q={}", rng.word()),
            1 => format!("q={}+{}", rng.word(), rng.word()),
            2 => format!("q={}", &rng.word()[..3]),
            3 => format!("q={}", names[rng.next(names.len())]),
            4 => format!("q={}&kind=skill", rng.word()),
            5 => format!("q={}&tag={}", rng.word(), rng.word()),
            6 => format!("q={}&offset=20", rng.word()),
            _ => String::new(),
        };
        queries.push(format!("{}/api/v1/search?{query}", registry.base));
    }
    let client = reqwest::Client::new();
    for url in queries.iter().take(200) {
        client.get(url).send().await.unwrap().bytes().await.unwrap();
    }
    let mut latencies = Vec::with_capacity(QUERIES);
    let mut by_kind: Vec<Vec<Duration>> = vec![Vec::new(); KINDS.len()];
    for (i, url) in queries.iter().enumerate() {
        let start = Instant::now();
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        response.bytes().await.unwrap();
        latencies.push(start.elapsed());
        by_kind[i % KINDS.len()].push(start.elapsed());
    }
    latencies.sort();
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{store:?}: {packages} packages published in {:.1} s ({:.1} ms each); search over \
         {QUERIES} queries: p50 {}, p99 {} (target p99 <= 10 ms), max {}",
        publishing.as_secs_f64(),
        publishing.as_secs_f64() * 1000.0 / packages as f64,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
    );
    for (kind, mut times) in KINDS.iter().zip(by_kind) {
        times.sort();
        println!(
            "  {kind:<22} p50 {}, p99 {}",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        );
    }
}

/// The query mix, in the order `run` cycles through it.
const KINDS: &[&str] = &[
    "one word",
    "two words",
    "a 3-letter prefix",
    "an exact name",
    "one word, kind=skill",
    "one word and a tag",
    "one word, 2nd page",
    "no query (all)",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let packages = args
        .iter()
        .position(|a| a == "--packages")
        .and_then(|i| args.get(i + 1))
        .map_or(10_000, |n| n.parse().expect("--packages N"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        run(Store::Sqlite, packages).await;
        run(Store::Postgres, packages).await;
    });
}
