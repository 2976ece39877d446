//! The agent loop end to end: real provider plugins in the sandbox, a fake vendor on loopback
//! speaking the vendor's wire format, the real server and database.

use kelp_tests::agent::{ask_and_wait, events, setup};
use kelp_tests::both_backends;
use kelp_tests::server::{Backend, TestServer};
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
    assert_ne!(out["cost_usd"], "0.00", "{out}");
    assert!(out["cost_usd"].is_string(), "{out}");

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
    assert_eq!(today["cost_usd"], out["cost_usd"]);
    let _ = json!(null);
});

/// A tool conversation through each other provider plugin.
async fn tool_conversation(flavor: Flavor) {
    let s = TestServer::start(kelp_tests::server::Backend::Sqlite).await;
    let vendor = FakeVendor::start(flavor).await;
    let a = setup(&s, &vendor, "some-model").await;
    vendor.push(Reply::ToolCalls {
        text: Some("Let me work that out.".into()),
        calls: vec![
            ("calc".into(), r#"{"expression": "2 + 3"}"#.into()),
            ("calc".into(), r#"{"expression": "10 / 4"}"#.into()),
        ],
    });
    vendor.push(Reply::text("5 and 2.5."));
    let (_, out) = ask_and_wait(&s, &a.admin, &a.session_id, "Two sums please").await;
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["text"], "5 and 2.5.");
    let results: Vec<Value> = out["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| serde_json::from_str(c["result"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(results.len(), 2, "{out}");
    assert_eq!(results[0]["result"], 5);
    assert_eq!(results[1]["result"], 2.5);
    let requests = vendor.requests();
    assert_eq!(requests.len(), 2);
    let second = requests[1].body.to_string();
    // Both results went back, tied to their calls.
    assert!(
        second.contains("2.5") && second.contains("\\\"result\\\":5"),
        "{second}"
    );
    if flavor == Flavor::Anthropic {
        assert_eq!(requests[0].header("x-api-key"), Some("sk-test-secret"));
        assert_eq!(requests[0].body["system"], "You are a helpful assistant.");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_tool_conversation() {
    tool_conversation(Flavor::Anthropic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_tool_conversation() {
    tool_conversation(Flavor::Ollama).await;
}

/// Recorded vendor streams replayed byte for byte: the answer text, and a tool the agent does
/// not have, whose error goes back to the model instead of ending the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_streams_replay() {
    let s = TestServer::start(kelp_tests::server::Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::Anthropic).await;
    let a = setup(&s, &vendor, "claude-sonnet-4-5").await;
    vendor.push(Reply::Fixture("anthropic-messages/basic.sse"));
    let (_, out) = ask_and_wait(&s, &a.admin, &a.session_id, "hi").await;
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["text"], "Hello there!");

    vendor.push(Reply::Fixture("anthropic-messages/tool-use.sse"));
    vendor.push(Reply::text("I cannot check the weather."));
    let (_, out) = ask_and_wait(&s, &a.admin, &a.session_id, "weather in SF?").await;
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["tool_calls"][0]["name"], "get_weather");
    assert_eq!(out["tool_calls"][0]["is_error"], true);
    assert!(
        out["tool_calls"][0]["result"]
            .as_str()
            .unwrap()
            .contains("no tool named")
    );
    assert_eq!(out["text"], "I cannot check the weather.");

    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let b = {
        // A second provider on the same server, against an OpenAI fake.
        let (status, body) = kelp_tests::agent::upload(
            &s,
            &a.admin,
            kelp_tests::pack(
                &kelp_tests::manifest(kelp_tests::components::PLUGIN_OPENAI_MANIFEST),
                kelp_tests::components::PLUGIN_OPENAI_WASM,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _) = s
            .send(
                "PUT",
                "/api/providers/openai/auth",
                Some(&a.admin),
                Some(json!({"base_url": vendor.base_url(), "api_key": "sk-o"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, agent) = s
            .send(
                "POST",
                "/api/agents",
                Some(&a.admin),
                Some(json!({"name": "o", "provider": {"plugin": "openai", "model": "gpt-4o"}})),
            )
            .await;
        kelp_tests::agent::new_session(&s, &a.admin, agent["id"].as_str().unwrap()).await
    };
    vendor.push(Reply::Fixture("openai-chat/parallel-tool-calls.sse"));
    vendor.push(Reply::text("done"));
    let (_, out) = ask_and_wait(&s, &a.admin, &b, "weather and stocks").await;
    assert_eq!(out["status"], "completed", "{out}");
    let names: Vec<&str> = out["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["GetWeatherArgs", "get_stock_price"]);
    assert!(
        out["tool_calls"][1]["arguments"]
            .as_str()
            .unwrap()
            .contains("AAPL")
            || out["tool_calls"][1]["arguments"]
                .as_str()
                .unwrap()
                .contains("ticker")
    );
    assert_eq!(vendor.request_count(), 2);
}

/// Abort mid-stream keeps the partial answer, closes the vendor stream, and the session
/// takes the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_keeps_the_partial_answer() {
    let s = TestServer::start(kelp_tests::server::Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    vendor.push(Reply::Slow {
        text: "one two three four five six seven eight nine ten".into(),
        delay: std::time::Duration::from_millis(300),
    });
    let mut stream = events(&s, &a.admin, &a.session_id, None).await;
    let (status, started) = s
        .send(
            "POST",
            &format!("/api/sessions/{}/messages", a.session_id),
            Some(&a.admin),
            Some(json!({"text": "count slowly"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    // A second message while the run is active is refused, not queued.
    let (status, busy) = s
        .send(
            "POST",
            &format!("/api/sessions/{}/messages", a.session_id),
            Some(&a.admin),
            Some(json!({"text": "me too"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{busy}");
    assert_eq!(busy["error"]["code"], "run_active");
    loop {
        let e = stream.next().await.unwrap();
        if e.event == "text-delta" {
            break;
        }
    }
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/sessions/{}/abort", a.session_id),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let rest = stream.until_end().await;
    let finish = rest.last().unwrap();
    assert_eq!(finish.event, "finish");
    assert_eq!(finish.data["status"], "aborted");
    let partial = finish.data["text"].as_str().unwrap();
    assert!(
        partial.starts_with("one") && !partial.contains("ten"),
        "{partial:?}"
    );
    let stored = messages(&s, &a.admin, &a.session_id).await;
    assert_eq!(stored.last().unwrap()["content"][0]["text"], partial);
    for _ in 0..50 {
        if vendor.open_streams() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(vendor.open_streams(), 0, "the vendor stream was closed");
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/sessions/{}/abort", a.session_id),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing left to abort");
    // The next message works, and the model sees the partial answer in the history.
    vendor.push(Reply::text("ok"));
    let (_, out) = ask_and_wait(&s, &a.admin, &a.session_id, "go on").await;
    assert_eq!(out["status"], "completed", "{out}");
    let history = vendor.requests().last().unwrap().body["messages"].to_string();
    assert!(history.contains(partial), "{history}");
}

// A client that reconnects with Last-Event-ID gets exactly what it missed.
both_backends!(
    sse_reconnect_gets_what_it_missed,
    |s: TestServer| async move {
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o").await;
        let words = "alpha beta gamma delta epsilon zeta eta theta iota kappa";
        vendor.push(Reply::Slow {
            text: words.into(),
            delay: std::time::Duration::from_millis(60),
        });
        let mut first = events(&s, &a.admin, &a.session_id, None).await;
        let (status, _) = s
            .send(
                "POST",
                &format!("/api/sessions/{}/messages", a.session_id),
                Some(&a.admin),
                Some(json!({"text": "greek letters"})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let mut seen = Vec::new();
        while seen
            .iter()
            .filter(|e: &&kelp_tests::agent::SseEvent| e.event == "text-delta")
            .count()
            < 3
        {
            seen.push(first.next().await.unwrap());
        }
        drop(first);
        let last_id = seen.last().unwrap().id.clone().unwrap();
        // Miss a few deltas.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut second = events(&s, &a.admin, &a.session_id, Some(&last_id)).await;
        let rest = second.until_end().await;
        let ids: Vec<i64> = seen
            .iter()
            .chain(rest.iter())
            .map(|e| e.id.as_deref().unwrap().parse().unwrap())
            .collect();
        assert!(
            ids.windows(2).all(|w| w[1] == w[0] + 1),
            "no gap, no repeat: {ids:?}"
        );
        let text: String = seen
            .iter()
            .chain(rest.iter())
            .filter(|e| e.event == "text-delta")
            .map(|e| e.data["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, words);
        assert_eq!(rest.last().unwrap().data["text"], words);
    }
);

/// Another process holding SQLite's write lock (a `kelp users` command, a backup tool) holds
/// up a run's writes but does not fail them, and the server answers other requests meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waits_out_another_sqlite_writer() {
    use sqlx::Connection;
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    vendor.push(Reply::text("Done."));
    let file = s.dir.path().join("kelp.db");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let waited = || s.metric("kelp_sqlite_writes_waited_total");
    assert_eq!(waited().await, 0);
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let (status, _) = s.send("GET", "/api/sessions", Some(&a.admin), None).await;
        assert_eq!(status, StatusCode::OK, "reads go on while the write waits");
        assert_eq!(waited().await, 1, "the run's first write is waiting");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    };
    let ((status, out), ()) = tokio::join!(
        ask_and_wait(&s, &a.admin, &a.session_id, "Anything?"),
        release
    );
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["text"], "Done.");
    let stored = messages(&s, &a.admin, &a.session_id).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
}

both_backends!(
    next_run_sees_the_stored_conversation,
    |s: TestServer| async move {
        // A run starts from the conversation this host kept from the last run when nothing was
        // added since, and reads the database when something was (here a message written by
        // another host sharing it). Either way the model sees exactly what is stored.
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o").await;
        vendor.push(Reply::tool_call("calc", r#"{"expression": "6 * 7"}"#));
        vendor.push(Reply::text("42."));
        vendor.push(Reply::text("43."));
        vendor.push(Reply::text("Noted."));
        let history_sources = || async {
            let count = |source: &str| format!("kelp_run_history_total{{source=\"{source}\"}}");
            (
                s.metric(&count("memory")).await,
                s.metric(&count("database")).await,
            )
        };
        for text in ["6 times 7?", "Plus one?"] {
            let (_, out) = ask_and_wait(&s, &a.admin, &a.session_id, text).await;
            assert_eq!(out["status"], "completed", "{out}");
        }
        // The first run had nothing to read; the second started from the kept conversation.
        assert_eq!(history_sources().await, (1, 0));
        s.state
            .db()
            .append_message(
                &a.session_id,
                "user",
                &json!([{"type": "text", "text": "A note from another host."}]),
            )
            .await
            .unwrap()
            .expect("the session exists");
        let (_, out) = ask_and_wait(&s, &a.admin, &a.session_id, "Got it?").await;
        assert_eq!(out["status"], "completed", "{out}");
        assert_eq!(history_sources().await, (1, 1));

        let sent: Vec<Vec<Value>> = vendor
            .requests()
            .iter()
            .map(|r| r.body["messages"].as_array().unwrap().clone())
            .collect();
        assert_eq!(sent.len(), 4);
        let summary = |messages: &[Value]| -> Vec<String> {
            messages
                .iter()
                .map(|m| {
                    let role = m["role"].as_str().unwrap();
                    match m["content"].as_str() {
                        Some(text) if !text.is_empty() => format!("{role}: {text}"),
                        _ if m["tool_calls"].is_array() => format!("{role}: calls"),
                        _ => role.to_owned(),
                    }
                })
                .collect()
        };
        // The second run's history, without a database read.
        assert_eq!(
            summary(&sent[2])[1..],
            [
                "user: 6 times 7?",
                "assistant: calls",
                r#"tool: {"expression":"6 * 7","result":42}"#,
                "assistant: 42.",
                "user: Plus one?"
            ]
        );
        // The third, read after another host's message: the same conversation, continued.
        assert_eq!(sent[3][..sent[2].len()], sent[2][..]);
        assert_eq!(
            summary(&sent[3])[sent[2].len()..],
            [
                "assistant: 43.",
                "user: A note from another host.",
                "user: Got it?"
            ]
        );
    }
);
