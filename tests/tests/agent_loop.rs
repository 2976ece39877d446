//! The agent loop end to end: real provider plugins in the sandbox, a fake vendor on loopback
//! speaking the vendor's wire format, the real server and database.

use kelp_tests::agent::{ask_and_wait, events, setup};
use kelp_tests::both_backends;
use kelp_tests::server::TestServer;
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn kinds(events: &[kelp_tests::agent::SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

async fn messages(s: &TestServer, token: &str, session: &str) -> Vec<Value> {
    let (status, body) = s
        .send(
            "GET",
            &format!("/api/sessions/{session}/messages"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

both_backends!(openai_tool_conversation, |s: TestServer| async move {
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    vendor.push(Reply::tool_call("calc", r#"{"expression": "6 * 7"}"#));
    vendor.push(Reply::text("The answer is 42."));
    let (status, out) = ask_and_wait(&s, &a.admin, &a.session_id, "What is 6 times 7?").await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["text"], "The answer is 42.");
    assert_eq!(out["steps"], 2);
    assert_eq!(out["tool_calls"][0]["name"], "calc");
    let result: Value =
        serde_json::from_str(out["tool_calls"][0]["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["result"], 42);
    assert_eq!(out["tool_calls"][0]["is_error"], false);
    assert!(out["usage"]["output_tokens"].as_u64().unwrap() > 0, "{out}");
    assert!(out["cost_usd"].as_f64().unwrap() > 0.0, "{out}");

    // What the vendor saw: the key the plugin never had, the tool, then the tool's result.
    let requests = vendor.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer sk-test-secret")
    );
    assert_eq!(requests[0].body["tools"][0]["function"]["name"], "calc");
    assert_eq!(requests[0].body["stream"], true);
    let second = &requests[1].body["messages"];
    let tool_msg = second
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("the tool result went back to the model");
    assert!(
        tool_msg["content"]
            .as_str()
            .unwrap()
            .contains("\"result\":42"),
        "{tool_msg}"
    );

    // Every completed message was stored, in order.
    let stored = messages(&s, &a.admin, &a.session_id).await;
    let roles: Vec<&str> = stored.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(stored[1]["content"][0]["type"], "tool_call");
    assert_eq!(stored[3]["content"][0]["text"], "The answer is 42.");

    // A client that connects later replays the stored boundary events in order.
    let mut replay = events(&s, &a.admin, &a.session_id, Some("0")).await;
    let got = replay.until_end().await;
    assert_eq!(
        kinds(&got),
        [
            "run-start",
            "tool-call",
            "tool-result",
            "step-finish",
            "step-finish",
            "finish"
        ]
    );
    let ids: Vec<i64> = got
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(got[5].data["status"], "completed");

    // The run and its cost are on the books.
    let (_, run) = s
        .send(
            "GET",
            &format!("/api/runs/{}", out["run_id"].as_str().unwrap()),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["steps"], 2);
    let (_, today) = s
        .send("GET", "/api/costs/today", Some(&a.admin), None)
        .await;
    assert_eq!(today["calls"], 2, "{today}");
    assert!((today["cost_usd"].as_f64().unwrap() - out["cost_usd"].as_f64().unwrap()).abs() < 1e-9);
    let _ = json!(null);
});
