//! The ways in to the agent loop besides `POST …/messages`: one-shot ask, the WebSocket,
//! the OpenAI-compatible `/v1`, provider checks; budgets and costs; skills; crash recovery.

use futures::{SinkExt, StreamExt};
use kelp::store::budgets::Limits;
use kelp_tests::agent::{SseReader, ask_and_wait, new_session, setup, start_slow_call};
use kelp_tests::both_backends;
use kelp_tests::server::{Backend, TestServer};
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Sets the user's budget (`PUT /api/settings/budget`).
async fn set_budget(s: &TestServer, token: &str, budget: Value) {
    let (status, body) = s
        .send("PUT", "/api/settings/budget", Some(token), Some(budget))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Sends a message on `session` of `host` and checks it is refused for what is reserved.
async fn refused_for_reservations(host: &TestServer, token: &str, session: &str) {
    let (status, body) = host
        .send(
            "POST",
            &format!("/api/sessions/{session}/messages"),
            Some(token),
            Some(json!({"text": "second"})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reserved"),
        "{body}"
    );
}

both_backends!(
    budgets_refuse_before_the_provider_is_called,
    |s: TestServer| async move {
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        // gpt-4o has a built-in price, so runs cost money.
        let a = setup(&s, &vendor, "gpt-4o").await;
        let (status, budget) = s
            .send("GET", "/api/settings/budget", Some(&a.admin), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(budget["daily_limit_usd"], Value::Null);
        let (status, body) = s
            .send(
                "PUT",
                "/api/settings/budget",
                Some(&a.admin),
                Some(json!({"daily_limit_usd": "-1"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

        // A limit below one call's estimate: refused with 402, and the vendor never called.
        let budget = json!({
            "daily_limit_usd": "0.000001",
            "monthly_limit_usd": null,
            "alert_thresholds": [0.5]
        });
        set_budget(&s, &a.admin, budget).await;
        let (status, body) = s
            .send(
                "POST",
                &format!("/api/sessions/{}/messages", a.session_id),
                Some(&a.admin),
                Some(json!({"text": "hi"})),
            )
            .await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
        assert_eq!(body["error"]["code"], "budget_exceeded");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("daily budget")
        );
        assert_eq!(vendor.request_count(), 0);
        // The refusal freed the session before it was answered: the next message is not
        // refused for a release still under way.
        let (claim,): (Option<String>,) =
            sqlx::query_as("SELECT run_id FROM chat_sessions WHERE id = $1")
                .bind(&a.session_id)
                .fetch_one(&s.state.db().pool)
                .await
                .unwrap();
        assert_eq!(claim, None);

        // Room for one call's estimate (max_tokens 100 at $10/M ≈ $0.001) but not two: while one
        // run holds its reservation, a concurrent run in another session is refused.
        set_budget(
            &s,
            &a.admin,
            json!({"daily_limit_usd": "0.0015", "alert_thresholds": [0.1]}),
        )
        .await;
        start_slow_call(&s, &a.admin, &a.session_id, &vendor, 150).await;
        let other = new_session(&s, &a.admin, &a.agent_id).await;
        refused_for_reservations(&s, &a.admin, &other).await;
        assert_eq!(vendor.request_count(), 1);

        // The first run finishes; its real cost is on the ledger and in the cost reports.
        let (_, done) = {
            let mut events =
                kelp_tests::agent::events(&s, &a.admin, &a.session_id, Some("0")).await;
            let all = events.until_end().await;
            (0, all)
        };
        assert_eq!(done.last().unwrap().event, "finish");
        // The call crossed the 10% alert threshold of the daily limit.
        let alert = done
            .iter()
            .find(|e| e.event == "budget-alert")
            .expect("a budget alert");
        assert_eq!(alert.data["limit"], "daily");
        assert_eq!(alert.data["threshold"], 0.1);
        let (_, today) = s
            .send("GET", "/api/costs/today", Some(&a.admin), None)
            .await;
        let spent = today["cost_usd"].as_str().unwrap().to_owned();
        assert_ne!(spent, "0.00", "{today}");
        assert_eq!(today["calls"], 1);
        assert_eq!(today["alerts"][0]["limit"], "daily", "{today}");
        let (_, history) = s
            .send("GET", "/api/costs/history?days=7", Some(&a.admin), None)
            .await;
        let days = history.as_array().unwrap();
        assert_eq!(days.len(), 7);
        assert_eq!(days[6]["date"], today["date"]);
        assert_eq!(days[6]["cost_usd"], spent.as_str());
        let (status, _) = s
            .send("GET", "/api/costs/history?days=0", Some(&a.admin), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        for period in ["day", "week", "month"] {
            let (_, b) = s
                .send(
                    "GET",
                    &format!("/api/costs/breakdown?period={period}"),
                    Some(&a.admin),
                    None,
                )
                .await;
            assert_eq!(b["by_model"][0]["model"], "gpt-4o", "{b}");
            assert_eq!(b["by_model"][0]["provider"], "openai");
            assert_eq!(b["total"]["cost_usd"], spent.as_str(), "{b}");
        }
        // Another user sees none of it.
        let bob = s.user("bob").await;
        let (_, theirs) = s.send("GET", "/api/costs/today", Some(&bob), None).await;
        assert_eq!(theirs["calls"], 0);

        // A limit of exactly what was spent leaves no room for another call.
        set_budget(&s, &a.admin, json!({"daily_limit_usd": spent})).await;
        let (status, _) = s
            .send(
                "POST",
                &format!("/api/sessions/{other}/messages"),
                Some(&a.admin),
                Some(json!({"text": "x"})),
            )
            .await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(vendor.request_count(), 1);
    }
);

both_backends!(
    concurrent_reservations_never_overspend,
    |s: TestServer| async move {
        // Forty calls of $0.001 reserved at once, through two connection pools (two hosts, or
        // on SQLite two processes) against a daily limit of $0.01: exactly ten fit.
        s.setup_admin().await;
        let (owner,): (String,) = sqlx::query_as("SELECT id FROM users")
            .fetch_one(&s.state.db().pool)
            .await
            .unwrap();
        let other = s.another_db().await;
        let limits = Limits {
            daily: Some(10_000),
            day_start_ms: 0,
            monthly: Some(1_000_000),
            month_start_ms: 0,
        };
        let now = kelp::store::now_ms();
        let reserve = |i: usize| {
            let db = if i.is_multiple_of(2) {
                s.state.db().clone()
            } else {
                other.clone()
            };
            let owner = owner.clone();
            tokio::spawn(async move {
                db.reserve_budget(
                    &format!("r{i}"),
                    &owner,
                    &format!("host{}", i % 2),
                    1_000,
                    limits,
                    now,
                )
                .await
                .unwrap()
            })
        };
        let granted = futures::future::join_all((0..40).map(reserve)).await;
        let granted: Vec<usize> = granted
            .into_iter()
            .enumerate()
            .filter_map(|(i, g)| g.unwrap().then_some(i))
            .collect();
        assert_eq!(granted.len(), 10, "granted: {granted:?}");
        let standing = s
            .state
            .db()
            .budget_standing(&owner, limits, now)
            .await
            .unwrap();
        assert_eq!(standing.reserved, 10_000);

        // A host that restarts keeps what its last process reserved (those calls may have
        // cost money); expired reservations stop counting for everyone, and the next host to
        // start deletes them.
        let db = s.state.db();
        assert_eq!(db.delete_expired_reservations(now).await.unwrap(), 0);
        let standing = db.budget_standing(&owner, limits, now).await.unwrap();
        assert_eq!(standing.reserved, 10_000);
        let later = now + kelp::store::budgets::RESERVATION_TTL_MS + 1;
        let standing = db.budget_standing(&owner, limits, later).await.unwrap();
        assert_eq!(standing.reserved, 0);
        assert_eq!(db.delete_expired_reservations(later).await.unwrap(), 10);
        assert!(
            other
                .reserve_budget("late", &owner, "host1", 10_000, limits, later)
                .await
                .unwrap()
        );
    }
);

/// Two hosts sharing one PostgreSQL database count each other's calls in progress: while a
/// run on one host holds its reservation, the other host refuses a run that would overspend
/// with it; once the call's cost is on the ledger its reservation is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_hold_across_hosts_sharing_a_database() {
    let s = TestServer::start(Backend::Postgres).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let other_host = s.second_host().await;
    // Room for one call's estimate (max_tokens 100 at $10/M ≈ $0.001) but not two.
    set_budget(&s, &a.admin, json!({"daily_limit_usd": "0.0015"})).await;
    let reservations = || async {
        let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM budget_reservations")
            .fetch_one(&s.state.db().pool)
            .await
            .unwrap();
        row.0
    };
    start_slow_call(&s, &a.admin, &a.session_id, &vendor, 300).await;
    assert_eq!(reservations().await, 1);
    let elsewhere = new_session(&other_host, &a.admin, &a.agent_id).await;
    refused_for_reservations(&other_host, &a.admin, &elsewhere).await;
    assert_eq!(vendor.request_count(), 1);

    let done = kelp_tests::agent::events(&s, &a.admin, &a.session_id, Some("0"))
        .await
        .until_end()
        .await;
    assert_eq!(done.last().unwrap().event, "finish");
    assert_eq!(reservations().await, 0, "settled with the ledger row");
    let (_, today) = s
        .send("GET", "/api/costs/today", Some(&a.admin), None)
        .await;
    assert_eq!(today["calls"], 1, "{today}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_streams_one_run_and_continues_its_session() {
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    vendor.push(Reply::tool_call("calc", r#"{"expression": "2^10"}"#));
    vendor.push(Reply::text("1024"));
    let resp = s
        .http
        .post(s.url("/api/ask"))
        .bearer_auth(&a.admin)
        .json(&json!({"text": "two to the tenth?", "agent": "helper"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let session = resp.headers()["x-kelp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(session, a.session_id);
    let got = SseReader::new(resp).until_end().await;
    let kinds: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run-start"));
    assert!(
        kinds.contains(&"tool-call") && kinds.contains(&"tool-result"),
        "{kinds:?}"
    );
    assert_eq!(got.last().unwrap().event, "finish");
    assert_eq!(got.last().unwrap().data["text"], "1024");

    // The same session again: the model sees the earlier exchange.
    vendor.push(Reply::text("2048"));
    let resp = s
        .http
        .post(s.url("/api/ask"))
        .bearer_auth(&a.admin)
        .json(&json!({"text": "and double that?", "session_id": session}))
        .send()
        .await
        .unwrap();
    let got = SseReader::new(resp).until_end().await;
    assert_eq!(got.last().unwrap().data["text"], "2048");
    let history = vendor.requests().last().unwrap().body["messages"].to_string();
    assert!(
        history.contains("two to the tenth?") && history.contains("1024"),
        "{history}"
    );

    // Bad requests get the envelope, not a stream.
    let (status, body) = s
        .send(
            "POST",
            "/api/ask",
            Some(&a.admin),
            Some(json!({"text": "", "agent": "helper"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = s
        .send(
            "POST",
            "/api/ask",
            Some(&a.admin),
            Some(json!({"text": "x", "agent": "nobody"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_carries_the_events_of_subscribed_sessions() {
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let url = s.url("/api/ws").replace("http://", "ws://");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", a.admin).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(
        json!({"type": "subscribe", "session_id": "nope"}).to_string(),
    ))
    .await
    .unwrap();
    let reply: Value = match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(reply["type"], "error", "{reply}");
    ws.send(Message::text(
        json!({"type": "subscribe", "session_id": a.session_id}).to_string(),
    ))
    .await
    .unwrap();
    // Give the subscription a moment to be registered before the run starts.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    vendor.push(Reply::text("over the socket"));
    let (status, _) = s
        .send(
            "POST",
            &format!("/api/sessions/{}/messages", a.session_id),
            Some(&a.admin),
            Some(json!({"text": "hi"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut kinds = Vec::new();
    let mut text = String::new();
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
            .await
            .expect("an event within 30 s")
            .unwrap()
            .unwrap();
        let Message::Text(t) = message else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["session_id"], a.session_id.as_str());
        let kind = v["event"].as_str().unwrap().to_owned();
        if kind == "text-delta" {
            text.push_str(v["data"]["text"].as_str().unwrap());
        }
        kinds.push(kind.clone());
        if kind == "finish" {
            break;
        }
    }
    assert_eq!(kinds.first().map(String::as_str), Some("run-start"));
    assert_eq!(text, "over the socket");
    // One socket follows at most 64 sessions (it holds one stream slot).
    for _ in 0..64 {
        let session = new_session(&s, &a.admin, &a.agent_id).await;
        ws.send(Message::text(
            json!({"type": "subscribe", "session_id": session}).to_string(),
        ))
        .await
        .unwrap();
    }
    let refused = loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
            .await
            .expect("an answer within 30 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = message {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    assert_eq!(refused["type"], "error", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("at most 64"),
        "{refused}"
    );
    // Without a token there is no socket.
    let denied = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(denied.is_err());
}

both_backends!(openai_compatible_v1, |s: TestServer| async move {
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let (status, models) = s.send("GET", "/v1/models", Some(&a.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "helper");

    // Not streamed: the agent runs its tool and answers.
    vendor.push(Reply::tool_call("calc", r#"{"expression": "6 * 7"}"#));
    vendor.push(Reply::text("It is 42."));
    let (status, out) = s
        .send(
            "POST",
            "/v1/chat/completions",
            Some(&a.admin),
            Some(json!({
                "model": "helper",
                "messages": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": [{"type": "text", "text": "What is 6*7?"}]}
                ]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["model"], "helper");
    assert_eq!(out["choices"][0]["message"]["role"], "assistant");
    assert_eq!(out["choices"][0]["message"]["content"], "It is 42.");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert!(out["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let first = &vendor.requests()[0].body["messages"];
    assert!(first.to_string().contains("Answer briefly."), "{first}");

    // Streamed, with the usage chunk asked for.
    vendor.push(Reply::text("Streaming works fine."));
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&a.admin)
        .json(&json!({
            "model": "helper",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Say something"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut reader = SseReader::new(resp);
    let mut chunks = Vec::new();
    while let Some(e) = reader.next().await {
        chunks.push(e.data);
    }
    assert_eq!(chunks.last().unwrap(), &Value::String("[DONE]".into()));
    let objects = &chunks[..chunks.len() - 1];
    assert!(
        objects
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"),
        "{objects:?}"
    );
    assert_eq!(objects[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = objects
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Streaming works fine.");
    let finish = objects
        .iter()
        .find(|c| c["choices"][0]["finish_reason"] == "stop");
    assert!(finish.is_some(), "{objects:?}");
    let usage = objects.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );

    // An unknown model and a missing key answer like OpenAI would, with an error object.
    let (status, body) = s
        .send(
            "POST",
            "/v1/chat/completions",
            Some(&a.admin),
            Some(json!({"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "model_not_found");
    let (status, _) = s.send("GET", "/v1/models", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_models_and_credential_test() {
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let (status, models) = s
        .send("GET", "/api/providers/openai/models", Some(&a.admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{models}");
    // The fake is not the vendor's default address: its own list.
    assert_eq!(models["source"], "server", "{models}");
    assert!(
        models["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-4o")
    );

    // A new key is tried without being saved.
    vendor.push(Reply::text("OK"));
    let (status, out) = s
        .send(
            "POST",
            "/api/providers/test",
            Some(&a.admin),
            Some(json!({"provider": "openai", "model": "gpt-4o", "api_key": "sk-candidate"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["text"], "OK");
    // The model list above was asked of the server with the stored key; this is the test.
    let tried = vendor.requests().last().unwrap().clone();
    assert_eq!(tried.header("authorization"), Some("Bearer sk-candidate"));
    assert_eq!(tried.body["max_tokens"], 16);

    vendor.push(Reply::status(401));
    let (_, out) = s
        .send(
            "POST",
            "/api/providers/test",
            Some(&a.admin),
            Some(json!({"provider": "openai", "model": "gpt-4o", "api_key": "sk-wrong"})),
        )
        .await;
    assert_eq!(out["ok"], false);
    assert_eq!(out["error"]["code"], "provider_auth", "{out}");
    assert!(!out.to_string().contains("sk-wrong"));

    // The saved key is still the one in use.
    vendor.push(Reply::text("fine"));
    let (_, run) = ask_and_wait(&s, &a.admin, &a.session_id, "hi").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        vendor.requests().last().unwrap().header("authorization"),
        Some("Bearer sk-test-secret")
    );

    // An unreachable base URL is a clear failure, not a hang.
    let (_, out) = s
        .send(
            "POST",
            "/api/providers/test",
            Some(&a.admin),
            Some(json!({"provider": "openai", "model": "gpt-4o", "base_url": "http://127.0.0.1:9/v1"})),
        )
        .await;
    assert_eq!(out["ok"], false);
    assert_eq!(out["error"]["code"], "provider_unreachable", "{out}");
    // Only admins try credentials.
    let bob = s.user("bob").await;
    let (status, _) = s
        .send(
            "POST",
            "/api/providers/test",
            Some(&bob),
            Some(json!({"provider": "openai", "model": "gpt-4o"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_are_listed_and_loaded_on_demand() {
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let manifest = "name = \"test/haiku\"\nversion = \"0.1.0\"\nkind = \"skill\"\ndescription = \"Haiku writing\"\n";
    let skill_md = "---\nname: haiku\ndescription: Write poems as haiku (5-7-5)\n---\nCount syllables: five, seven, five. Never rhyme.\n";
    let package =
        kelp_registry::package::write_package(manifest, None, Some(skill_md), None).unwrap();
    let (status, body) = kelp_tests::agent::upload(&s, &a.admin, package).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .send(
            "PATCH",
            &format!("/api/agents/{}", a.agent_id),
            Some(&a.admin),
            Some(json!({"skills": ["test/haiku"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    vendor.push(Reply::tool_call("load_skill", r#"{"name": "haiku"}"#));
    vendor.push(Reply::text("Old pond, frog jumps in"));
    let (_, out) = ask_and_wait(&s, &a.admin, &a.session_id, "a poem please").await;
    assert_eq!(out["status"], "completed", "{out}");
    let requests = vendor.requests();
    let system = requests[0].body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        system.contains("haiku: Write poems as haiku (5-7-5)"),
        "{system}"
    );
    assert!(
        !system.contains("Never rhyme"),
        "the body is loaded only on demand"
    );
    let tools: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"load_skill") && tools.contains(&"calc"),
        "{tools:?}"
    );
    assert!(
        requests[1].body["messages"]
            .to_string()
            .contains("Never rhyme")
    );
}

both_backends!(
    runs_cut_off_by_a_crash_are_marked_at_start,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let (_, agent) = s
            .send(
                "POST",
                "/api/agents",
                Some(&admin),
                Some(json!({"name": "a", "provider": {"plugin": "none", "model": "m"}})),
            )
            .await;
        let session = new_session(&s, &admin, agent["id"].as_str().unwrap()).await;
        let (_, me) = s.send("GET", "/api/me", Some(&admin), None).await;
        let user = me["id"]
            .as_str()
            .expect("the signed-in user's id")
            .to_owned();
        // A run left `running` by a host that died, and one by another host still alive.
        let db = s.state.db();
        for (id, host) in [("r-dead", "host-a"), ("r-other", "host-b")] {
            let row = kelp::store::runs::RunRow {
                id: id.into(),
                session_id: session.clone(),
                owner_id: user.clone(),
                status: "running".into(),
                error: None,
                steps: 0,
                usage: json!({}),
                cost_micros: 0,
                started_at_ms: 1,
                finished_at_ms: None,
            };
            db.start_run(
                &row,
                host,
                kelp::store::runs::StepWrite {
                    session_id: &session,
                    run_id: id,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        }
        // host-a starts again.
        let restarted = kelp::agent::AgentHost::new(
            s.state.runtime.clone(),
            kelp::agent::AgentSettings::default(),
            "host-a".into(),
        );
        assert_eq!(restarted.recover().await.unwrap(), 1);
        let (_, dead) = s.send("GET", "/api/runs/r-dead", Some(&admin), None).await;
        assert_eq!(dead["status"], "interrupted", "{dead}");
        assert_eq!(dead["error"]["code"], "interrupted");
        let (_, other) = s.send("GET", "/api/runs/r-other", Some(&admin), None).await;
        assert_eq!(
            other["status"], "running",
            "another host's live run is left alone"
        );
    }
);

both_backends!(
    messages_go_only_to_your_own_sessions_with_an_agent,
    |s: TestServer| async move {
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o").await;
        let bob = s.user("bob").await;
        let (status, body) = s
            .send(
                "POST",
                &format!("/api/sessions/{}/messages", a.session_id),
                Some(&bob),
                Some(json!({"text": "hi"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _) = s
            .send(
                "POST",
                "/api/sessions/no-such-session/messages",
                Some(&a.admin),
                Some(json!({"text": "hi"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, bare) = s
            .send(
                "POST",
                "/api/sessions",
                Some(&bob),
                Some(json!({"title": "no agent"})),
            )
            .await;
        let (status, body) = s
            .send(
                "POST",
                &format!("/api/sessions/{}/messages", bare["id"].as_str().unwrap()),
                Some(&bob),
                Some(json!({"text": "hi"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "no_agent");
        assert_eq!(vendor.request_count(), 0);
        // The refused attempts left the sessions free.
        vendor.push(Reply::text("fine"));
        let (_, out) = ask_and_wait(&s, &a.admin, &a.session_id, "hi").await;
        assert_eq!(out["status"], "completed", "{out}");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_step_that_would_break_the_budget_ends_the_run() {
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    // Room for the first call's estimate (max_tokens 100 at $10/M plus a short prompt, about
    // $0.0011) but not for what it costs plus the second call's estimate.
    set_budget(&s, &a.admin, json!({"daily_limit_usd": "0.0015"})).await;
    vendor.push(Reply::tool_call("calc", r#"{"expression": "1 + 1"}"#));
    vendor.push(Reply::text("never sent"));
    let (status, out) = ask_and_wait(&s, &a.admin, &a.session_id, "one plus one").await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["status"], "failed", "{out}");
    assert_eq!(out["error"]["code"], "budget_exceeded", "{out}");
    assert_eq!(
        vendor.request_count(),
        1,
        "the second call was refused before it was sent"
    );
    // The first step's work is kept: the call, its result, its cost.
    assert_eq!(out["tool_calls"][0]["name"], "calc");
    let (_, today) = s
        .send("GET", "/api/costs/today", Some(&a.admin), None)
        .await;
    assert_eq!(today["calls"], 1, "{today}");
}
