//! `kelp serve` as a real process: the first-party plugins built into the binary (or a
//! `--bundled` directory instead) installed at start with no network, health and readiness,
//! first-run setup, and tools over HTTP.

use std::time::Duration;

use kelp_tests::process::KelpProcess;
use kelp_tests::{components as c, manifest, pack};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn serve_installs_bundled_plugins_and_answers_over_http() {
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
    let server = KelpProcess::start(
        env!("CARGO_BIN_EXE_kelp"),
        data.path(),
        &["--bundled", bundled.path().to_str().unwrap()],
        &[],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let health = http
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    assert_eq!(
        http.get(format!("{}/readyz", server.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // /api needs a signed-in user; a fresh server has none until first-run setup.
    let denied = http
        .get(format!("{}/api/tools", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = http
        .get(format!("{}/api/tools", server.base))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let setup: Value = http
        .post(format!("{}/api/auth/setup", server.base))
        .json(&json!({"username": "admin", "password": "correct horse"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = setup["token"].as_str().unwrap().to_owned();
    let tools: Value = http
        .get(format!("{}/api/tools", server.base))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<String> = tools["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}/{}",
                t["instance"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        ["calc/calc", "calc/json_query", "http-fetch/http_fetch"]
    );

    let call = |tool: &str, body: &str| {
        http.post(format!("{}/api/tools/{tool}", server.base))
            .bearer_auth(token.trim())
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    let answer: Value = call("calc/calc", r#"{"expression":"6*7"}"#)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let output: Value = serde_json::from_str(answer["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["result"], 42);

    // Bad input is a 4xx with the error envelope, never a 5xx.
    for (tool, body, status) in [
        ("calc/calc", "{not json", 400),
        ("calc/nope", "{}", 404),
        ("nope/calc", "{}", 404),
        ("calc/calc", r#"{"expression":"1/0"}"#, 422),
    ] {
        let resp = call(tool, body).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{tool} {body}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    // http-fetch was approved for public hosts only: loopback stays out of reach.
    let resp = call(
        "http-fetch/http_fetch",
        &json!({"url": server.base.clone() + "/health"}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loopback"),
        "{body}"
    );
}

/// `kelp` as `cargo install --path host` leaves it: no package files beside it, no flags.
#[tokio::test(flavor = "multi_thread")]
async fn serve_without_bundled_has_the_first_party_plugins_built_in() {
    let data = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let server = KelpProcess::start(env!("CARGO_BIN_EXE_kelp"), data.path(), &[], &[]);
    let setup: Value = http
        .post(format!("{}/api/auth/setup", server.base))
        .json(&json!({"username": "admin", "password": "correct horse"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = setup["token"].as_str().unwrap().to_owned();
    let get =
        |base: String, path: &str| http.get(format!("{base}{path}")).bearer_auth(&token).send();
    let names = |list: &Value, fields: &[&str]| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                fields
                    .iter()
                    .map(|f| i[*f].as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect()
    };
    let tools: Value = get(server.base.clone(), "/api/tools")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        names(&tools, &["instance", "name"]),
        ["calc/calc", "calc/json_query", "http-fetch/http_fetch"]
    );
    let providers: Value = get(server.base.clone(), "/api/providers")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids = names(&providers, &["id"]);
    ids.sort();
    assert_eq!(ids, ["anthropic", "ollama", "openai"]);
    let answer: Value = http
        .post(format!("{}/api/tools/calc/calc", server.base))
        .bearer_auth(&token)
        .json(&json!({"expression": "6*7"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["output"].as_str().map(|o| o.contains("42")),
        Some(true),
        "{answer}"
    );

    // A plugin the operator removed stays removed when the server starts again.
    let removed = http
        .delete(format!("{}/api/plugins/kelp/calc", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    drop(server);
    let server = KelpProcess::start(env!("CARGO_BIN_EXE_kelp"), data.path(), &[], &[]);
    let tools: Value = get(server.base.clone(), "/api/tools")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        names(&tools, &["instance", "name"]),
        ["http-fetch/http_fetch"]
    );
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let data = tempfile::tempdir().unwrap();
    let mut server = KelpProcess::start(env!("CARGO_BIN_EXE_kelp"), data.path(), &[], &[]);
    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kelp serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}

/// `kelp serve` compiles plugins in `kelp compile-worker` children, so the compiler's memory
/// is never the server's: what a worker writes is what the server's cache then loads, and a
/// worker that cannot run says so (the server then compiles in-process).
#[test]
fn the_compile_worker_fills_the_cache_the_server_loads() {
    use kelp::plugins::RuntimeSettings;
    use kelp::plugins::cache::{CacheOutcome, CompileCache, CompileWorker};
    let dir = tempfile::tempdir().unwrap();
    let settings = RuntimeSettings::default();
    let engine = kelp::plugins::engine::build_engine(&settings).unwrap();
    let cache = CompileCache::open(
        &engine,
        &dir.path().join("cache"),
        &dir.path().join("cache.key"),
    )
    .unwrap();
    let wasm = std::fs::read(c::PLUGIN_CALC_WASM).unwrap();
    let sha = kelp::util::sha256_hex(&wasm);
    assert!(!cache.has_entry(&sha));
    let worker = CompileWorker {
        exe: env!("CARGO_BIN_EXE_kelp").into(),
    };
    worker.compile(&settings, &cache, &wasm, &sha).unwrap();
    assert!(cache.has_entry(&sha));
    let (_, outcome) = cache.load_or_compile(&engine, &wasm, &sha).unwrap();
    assert_eq!(
        outcome,
        CacheOutcome::Hit,
        "the worker's engine is the server's"
    );
    // A wasm that is not what its digest says is refused by the worker, and nothing written.
    let other = kelp::util::sha256_hex(b"something else");
    let refused = worker
        .compile(&settings, &cache, &wasm, &other)
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("digest mismatch"),
        "{refused:#}"
    );
    assert!(!cache.has_entry(&other));
    let missing = CompileWorker {
        exe: dir.path().join("no-such-kelp"),
    };
    assert!(missing.compile(&settings, &cache, &wasm, &sha).is_err());
}
