//! A provider's API key never reaches what a member can read — the transcript, the run's text,
//! the stored events — even when the vendor (or a proxy before it) echoes the key back: split
//! across two reads of the stream, in a response header, or in an error body.

use kelp_tests::agent::{ask_and_wait, events, new_session, setup};
use kelp_tests::server::{Backend, TestServer};
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use kelp_tests::{components as c, manifest, pack};
use reqwest::StatusCode;
use serde_json::json;

/// The key `setup` stores for the vendors that take one.
const KEY: &str = "sk-test-secret";

/// Everything a member can read about a session: its messages and its stored events.
async fn transcript(s: &TestServer, token: &str, session: &str) -> String {
    let (status, messages) = s
        .send(
            "GET",
            &format!("/api/sessions/{session}/messages?limit=200"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{messages}");
    let mut replay = events(s, token, session, Some("0")).await;
    let run = replay.until_end().await;
    format!("{messages} {run:?}")
}

async fn key_split_over_two_reads(flavor: Flavor) {
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(flavor).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    vendor.push(Reply::EchoKey);
    let (status, out) = ask_and_wait(&s, &a.admin, &a.session_id, "what key?").await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["status"], "completed", "{out}");
    // The key did reach the vendor, in its bound header.
    let sent = vendor.requests().last().unwrap().clone();
    let header = match flavor {
        Flavor::Anthropic => sent.header("x-api-key").map(str::to_owned),
        _ => sent
            .header("authorization")
            .map(|v| v.replace("Bearer ", "")),
    };
    assert_eq!(header.as_deref(), Some(KEY));
    assert_eq!(out["text"], "You sent [REDACTED:API_KEY].", "{out}");
    let seen = transcript(&s, &a.admin, &a.session_id).await;
    assert!(seen.contains("[REDACTED:API_KEY]"), "{seen}");
    assert!(
        !seen.contains(KEY),
        "the key reached the transcript: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_key_split_across_chunks_is_redacted() {
    key_split_over_two_reads(Flavor::OpenAi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_key_split_across_chunks_is_redacted() {
    key_split_over_two_reads(Flavor::Anthropic).await;
}

/// The test provider with an API key bound to its base URL, pointed at `vendor`, and a session
/// of an agent on it: `(admin token, session id)`. It passes response headers and error bodies
/// on as they are, as a careless or hostile third-party provider could.
async fn echo_provider(s: &TestServer, vendor: &FakeVendor) -> (String, String) {
    let admin = s.setup_admin().await;
    let text = manifest(c::COMPONENT_PROVIDER_ECHO_MANIFEST).replace(
        "http = [\"{config.base_url}\"]\n",
        "http = [\"{config.base_url}\"]\n\
         secrets = [{ name = \"API_KEY\", host = \"{config.base_url}\", header = \"authorization\", format = \"Bearer {}\" }]\n",
    );
    assert!(text.contains("secrets ="));
    let base_url = format!("http://{}", vendor.addr());
    let config = json!({"base_url": base_url}).to_string();
    let resp = s
        .http
        .post(s.url("/api/plugins"))
        .query(&[("instance", "echo-llm"), ("config", &config)])
        .bearer_auth(&admin)
        .header("content-type", "application/octet-stream")
        .body(pack(&text, c::COMPONENT_PROVIDER_ECHO_WASM))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (status, body) = s
        .send(
            "PUT",
            "/api/providers/echo-llm/auth",
            Some(&admin),
            Some(json!({"api_key": KEY, "base_url": base_url})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, agent) = s
        .send(
            "POST",
            "/api/agents",
            Some(&admin),
            Some(json!({
                "name": "echo",
                "instructions": "Echo.",
                "provider": {"plugin": "echo-llm", "model": "echo-1"},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let session = new_session(s, &admin, agent["id"].as_str().unwrap()).await;
    (admin, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_echoed_in_a_response_header_is_redacted() {
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let (admin, session) = echo_provider(&s, &vendor).await;
    vendor.push(Reply::EchoKey);
    let (_, out) = ask_and_wait(&s, &admin, &session, "what key?").await;
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(
        out["text"], "[x-echo: [REDACTED:API_KEY]]You sent [REDACTED:API_KEY].",
        "{out}"
    );
    let seen = transcript(&s, &admin, &session).await;
    assert!(
        !seen.contains(KEY),
        "the key reached the transcript: {seen}"
    );
}

/// The host reads at most 64 KiB of an error body. Redacting after cutting it would leave the
/// start of a key that straddles the cut in the message, no longer recognisable as the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_body_is_redacted_before_it_is_cut() {
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let (admin, session) = echo_provider(&s, &vendor).await;
    // The body starts `{"error":{"message":"` (22 bytes); the key's first 7 bytes end the
    // first 64 KiB.
    let padding = "x".repeat(64 * 1024 - 22 - 7);
    vendor.push(Reply::error(400, format!("{padding}{KEY} is not valid")));
    let (_, out) = ask_and_wait(&s, &admin, &session, "hello").await;
    assert_eq!(out["status"], "failed", "{out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("xxxx"),
        "the plugin's message quotes the body"
    );
    assert!(
        !message.contains(&KEY[..7]),
        "part of the key: {}",
        &message[message.len() - 40..]
    );
    let seen = transcript(&s, &admin, &session).await;
    assert!(
        !seen.contains(&KEY[..7]),
        "part of the key reached the transcript"
    );
}
