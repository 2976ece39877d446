//! `kelp serve` as a real process: bundled first-party plugins installed at start with no
//! network, health and readiness, first-run setup, and tools over HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kelp_tests::{components as c, manifest, pack};
use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data: &std::path::Path, bundled: &std::path::Path) -> Server {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kelp"))
        .args(["serve", "--bundled", bundled.to_str().unwrap()])
        .env("KELP_DATA_DIR", data)
        .env("KELP_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server logs "kelp is serving" once it listens.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("server exited before serving").unwrap();
        if line.contains("kelp is serving") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

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
    let server = start(data.path(), bundled.path());
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
