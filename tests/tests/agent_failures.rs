//! Every vendor failure ends in a clear run error or a successful retry — never a hang or a
//! 5xx — for each first-party provider against its vendor's fake.

use kelp_tests::agent::{ask_and_wait, events, setup};
use kelp_tests::server::{Backend, TestServer};
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use reqwest::StatusCode;
use serde_json::Value;

async fn last_assistant_text(s: &TestServer, token: &str, session: &str) -> String {
    let (_, body) = s
        .send(
            "GET",
            &format!("/api/sessions/{session}/messages?limit=200"),
            Some(token),
            None,
        )
        .await;
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "assistant")
        .map(|m| {
            m["content"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default()
}

fn failed_with(out: &Value, code: &str) {
    assert_eq!(out["status"], "failed", "{out}");
    assert_eq!(out["error"]["code"], code, "{out}");
    assert!(
        out["error"]["message"].as_str().unwrap().len() > 10,
        "a message a person can act on: {out}"
    );
}

async fn failure_matrix(flavor: Flavor) {
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(flavor).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let ask = |text: &'static str| ask_and_wait(&s, &a.admin, &a.session_id, text);

    // A refused key: one attempt, no retry, a clear error.
    vendor.push(Reply::status(401));
    let (status, out) = ask("hello").await;
    assert_eq!(status, StatusCode::OK, "{out}");
    failed_with(&out, "provider_auth");
    assert_eq!(vendor.request_count(), 1);

    // 429 with retry-after: waits as told, then succeeds.
    vendor.push(Reply::rate_limited(1));
    vendor.push(Reply::text("after the wait"));
    let started = std::time::Instant::now();
    let (_, out) = ask("again").await;
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["text"], "after the wait");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(vendor.request_count(), 3);

    // A 500: retried with backoff, then succeeds.
    vendor.push(Reply::status(500));
    vendor.push(Reply::text("recovered"));
    let (_, out) = ask("once more").await;
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["text"], "recovered");
    assert_eq!(vendor.request_count(), 5);

    // Persistent 500s: gives up after the configured retries with the vendor's reason.
    for _ in 0..4 {
        vendor.push(Reply::status(500));
    }
    let (_, out) = ask("and again").await;
    assert_eq!(out["status"], "failed", "{out}");
    assert_eq!(vendor.request_count(), 9, "1 attempt + 3 retries");

    // A malformed chunk: the run fails with a clear error; nothing is retried after text
    // reached the client.
    vendor.push(Reply::Malformed);
    let (_, out) = ask("malformed").await;
    assert_eq!(out["status"], "failed", "{out}");
    assert!(
        out["error"]["code"]
            .as_str()
            .unwrap()
            .starts_with("provider_"),
        "{out}"
    );

    // A stream cut mid-way: the run fails, and the partial answer is kept.
    let before = vendor.request_count();
    vendor.push(Reply::CutMidway("partial answer that was cut".into()));
    let (_, out) = ask("cut").await;
    failed_with(&out, "provider_unreachable");
    assert_eq!(
        vendor.request_count(),
        before + 1,
        "no retry after deltas arrived"
    );
    let kept = last_assistant_text(&s, &a.admin, &a.session_id).await;
    assert!(
        !kept.is_empty() && "partial answer that was cut".starts_with(kept.trim_end()),
        "{kept:?}"
    );

    // The stored events end each failed run with an `error` event carrying the code.
    let mut replay = events(&s, &a.admin, &a.session_id, Some("0")).await;
    let mut errors = Vec::new();
    for _ in 0..6 {
        let run = replay.until_end().await;
        let last = run.last().unwrap();
        if last.event == "error" {
            errors.push(last.data["code"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(errors[0], "provider_auth");
    assert_eq!(errors[3], "provider_unreachable");

    // An error event in the middle of the stream, before any text: Anthropic's is
    // `overloaded_error`, which is retried; the others are server errors the plugin reports
    // as failures. Either way the run ends, with an answer or a clear error.
    vendor.push(Reply::MidStreamError("the vendor fell over".into()));
    vendor.push(Reply::text("second try"));
    let (_, out) = ask("mid-stream").await;
    match flavor {
        Flavor::Anthropic => {
            assert_eq!(out["status"], "completed", "{out}");
            assert_eq!(out["text"], "second try");
        }
        _ => {
            assert_eq!(out["status"], "failed", "{out}");
            assert!(
                out["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("fell over"),
                "{out}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_failures() {
    failure_matrix(Flavor::OpenAi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_failures() {
    failure_matrix(Flavor::Anthropic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_failures() {
    failure_matrix(Flavor::Ollama).await;
}
