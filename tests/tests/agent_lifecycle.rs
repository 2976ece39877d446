//! What owns a run and its events, and what ends them: the session's claim (one run per
//! session on every host, a per-user limit), event channels freed with their last holder,
//! replay however far behind, runs stopped before their session or user is deleted, and
//! what a call costs when its stream never said.

use kelp::store::runs::{EventRow, StepWrite};
use kelp_tests::agent::{
    SseReader, ask_and_wait, events, eventually, new_session, setup, start_slow_run,
};
use kelp_tests::both_backends;
use kelp_tests::server::{Backend, Settings, TestServer};
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A text the slow fake vendor streams word by word: long enough to outlast any test.
fn long_answer() -> String {
    (0..400).map(|i| format!("w{i} ")).collect()
}

fn messages_path(session: &str) -> String {
    format!("/api/sessions/{session}/messages")
}

async fn post_message(s: &TestServer, token: &str, session: &str) -> (StatusCode, Value) {
    s.send(
        "POST",
        &messages_path(session),
        Some(token),
        Some(json!({"text": "hello"})),
    )
    .await
}

async fn abort(s: &TestServer, token: &str, session: &str) -> (StatusCode, Value) {
    s.send(
        "POST",
        &format!("/api/sessions/{session}/abort"),
        Some(token),
        None,
    )
    .await
}

/// The run id a session's claim holds in the database, if any.
async fn claimed_by(s: &TestServer, session: &str) -> Option<String> {
    let row: (Option<String>,) = sqlx::query_as("SELECT run_id FROM chat_sessions WHERE id = $1")
        .bind(session)
        .fetch_one(&s.state.db().pool)
        .await
        .unwrap();
    row.0
}

both_backends!(
    event_channels_go_with_their_last_holder,
    |s: TestServer| async move {
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o").await;
        let open = || s.state.agent.open_channels();
        let ask = || async {
            let resp = s
                .http
                .post(s.url("/api/ask"))
                .bearer_auth(&a.admin)
                .json(&json!({"text": "hi", "session_id": a.session_id}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            SseReader::new(resp)
        };

        // A streamed ask read to its end: its subscriber outlives the run by a moment.
        vendor.push(Reply::text("hello"));
        let got = ask().await.until_end().await;
        assert_eq!(got.last().unwrap().event, "finish");
        eventually("no channel after a streamed ask", || async { open() == 0 }).await;

        // A subscriber of a session that never runs again, which then leaves.
        let follower = events(&s, &a.admin, &a.session_id, None).await;
        assert_eq!(open(), 1);
        drop(follower);
        eventually("no channel after its subscriber left", || async {
            open() == 0
        })
        .await;

        // A streamed ask whose client goes away mid-run: the run goes on and ends, and then
        // nothing holds the channel.
        vendor.push(Reply::Slow {
            text: "one two three four five six".into(),
            delay: std::time::Duration::from_millis(50),
        });
        let mut reader = ask().await;
        assert_eq!(reader.next().await.unwrap().event, "run-start");
        drop(reader);
        eventually("the run's answer stored", || async {
            let (_, page) = s
                .send("GET", &messages_path(&a.session_id), Some(&a.admin), None)
                .await;
            page["total"] == 4
        })
        .await;
        eventually("no channel after the abandoned ask's run", || async {
            open() == 0
        })
        .await;
        assert_eq!(s.metric("kelp_event_channels").await, 0);
    }
);

/// Holds the database up so that a run's start waits in it: SQLite's write lock (so the
/// session's claim waits), or on PostgreSQL a lock on `user_settings` (so the read after the
/// claim waits). Dropping it lets go.
enum Hold {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::Transaction<'static, sqlx::Any>),
}

impl Hold {
    async fn take(s: &TestServer) -> Hold {
        use sqlx::Connection;
        match s.backend {
            Backend::Sqlite => {
                let file = s.dir.path().join("kelp.db");
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
                        .await
                        .unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Hold::Sqlite(conn)
            }
            Backend::Postgres => {
                let db = s.another_db().await;
                let mut tx = db.pool.begin().await.unwrap();
                sqlx::query("LOCK TABLE user_settings IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                Hold::Postgres(tx)
            }
        }
    }

    async fn release(self) {
        match self {
            Hold::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            Hold::Postgres(tx) => tx.rollback().await.unwrap(),
        }
    }
}

both_backends!(
    a_request_dropped_while_starting_leaves_its_session_free,
    |s: TestServer| async move {
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o").await;
        let hold = Hold::take(&s).await;
        // The client gives up while the run's start waits for the database; the server drops
        // the request's handler with it.
        let gave_up = s
            .http
            .post(s.url(&messages_path(&a.session_id)))
            .bearer_auth(&a.admin)
            .json(&json!({"text": "hello"}))
            .timeout(std::time::Duration::from_millis(500))
            .send()
            .await;
        assert!(gave_up.is_err(), "{gave_up:?}");
        // The server dropped the request's handler with the connection, and with it the run's
        // mark, while the database still holds the start up.
        eventually("the dropped start left no run behind", || async {
            !s.state.agent.has_runs()
        })
        .await;
        hold.release().await;

        eventually("the session's claim released", || async {
            claimed_by(&s, &a.session_id).await.is_none()
        })
        .await;
        let (status, body) = abort(&s, &a.admin, &a.session_id).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "no_active_run");
        let runs: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM runs WHERE session_id = $1")
            .bind(&a.session_id)
            .fetch_one(&s.state.db().pool)
            .await
            .unwrap();
        assert_eq!(runs.0, 0, "the dropped message started no run");
        vendor.push(Reply::text("here"));
        let (status, out) = ask_and_wait(&s, &a.admin, &a.session_id, "again").await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(out["status"], "completed", "{out}");
    }
);

/// Two hosts on one PostgreSQL: a message through the second host while the first runs the
/// session is refused as on one host, and the second host's next run numbers its events
/// after the first's although it kept the session's channel open all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_per_session_holds_across_hosts() {
    let s = TestServer::start(Backend::Postgres).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let b = s.second_host().await;
    b.state.runtime.load_all().await.unwrap();
    let on_b = events(&b, &a.admin, &a.session_id, None).await;

    start_slow_run(&s, &a.admin, &a.session_id, &vendor, "one two three", 100).await;
    let (status, body) = post_message(&b, &a.admin, &a.session_id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "run_active");
    let first = events(&s, &a.admin, &a.session_id, Some("0"))
        .await
        .until_end()
        .await;
    assert_eq!(first.last().unwrap().event, "finish");

    vendor.push(Reply::text("from the second host"));
    let (status, out) = ask_and_wait(&b, &a.admin, &a.session_id, "again").await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["status"], "completed", "{out}");
    let mut replay = events(&b, &a.admin, &a.session_id, Some("0")).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        for e in replay.until_end().await {
            ids.push(e.id.unwrap().parse::<i64>().unwrap());
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    drop(on_b);
}

/// A user may have `max_runs_per_user` runs in progress (here 2), on every host together;
/// other users are not held up by them.
async fn a_user_may_run_only_so_many_runs_at_once(backend: Backend) {
    let settings = || {
        let mut settings = Settings::default();
        settings.agent.max_runs_per_user = 2;
        settings
    };
    let s = TestServer::start_with(backend, settings()).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let sessions = [
        a.session_id.clone(),
        new_session(&s, &a.admin, &a.agent_id).await,
        new_session(&s, &a.admin, &a.agent_id).await,
    ];
    for session in &sessions[..2] {
        start_slow_run(&s, &a.admin, session, &vendor, &long_answer(), 100).await;
    }
    let (status, body) = post_message(&s, &a.admin, &sessions[2]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_runs");
    // A refused /v1 request or one-shot ask leaves no session (nor history) behind.
    let (status, body) = s
        .send(
            "POST",
            "/v1/chat/completions",
            Some(&a.admin),
            Some(json!({"model": "helper", "messages": [
                {"role": "user", "content": "earlier"},
                {"role": "assistant", "content": "yes"},
                {"role": "user", "content": "now"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let (status, body) = s
        .send(
            "POST",
            "/api/ask",
            Some(&a.admin),
            Some(json!({"text": "one more", "agent": "helper"})),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let (_, page) = s.send("GET", "/api/sessions", Some(&a.admin), None).await;
    assert_eq!(page["total"], 3, "{page}");
    if backend == Backend::Postgres {
        let b = s.second_host_with(settings()).await;
        let (status, _) = post_message(&b, &a.admin, &sessions[2]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }

    let bob = s.user("bob").await;
    let (status, agent) = s
        .send(
            "POST",
            "/api/agents",
            Some(&bob),
            Some(json!({"name": "bobs", "provider": {"plugin": a.provider, "model": "gpt-4o"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let bobs = new_session(&s, &bob, agent["id"].as_str().unwrap()).await;
    vendor.push(Reply::text("hi bob"));
    let (status, out) = ask_and_wait(&s, &bob, &bobs, "hi").await;
    assert_eq!(status, StatusCode::OK, "{out}");

    // Once one of the first user's runs ends, the next may start.
    let (status, _) = abort(&s, &a.admin, &sessions[0]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("room for another run", || async {
        claimed_by(&s, &sessions[0]).await.is_none()
    })
    .await;
    vendor.push(Reply::text("at last"));
    let (status, out) = ask_and_wait(&s, &a.admin, &sessions[2], "now?").await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["status"], "completed", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_limit_sqlite() {
    a_user_may_run_only_so_many_runs_at_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_limit_postgres() {
    a_user_may_run_only_so_many_runs_at_once(Backend::Postgres).await;
}

/// With four plugin slots, provider streams take at most three: a tool call goes through
/// while four runs want to stream, and the fourth stream waits for a slot instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_streams_leave_slots_for_tool_calls() {
    let mut settings = Settings::default();
    settings.plugins.max_concurrent_plugin_calls = 4;
    let s = TestServer::start_with(Backend::Sqlite, settings).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let mut sessions = vec![a.session_id.clone()];
    for _ in 0..3 {
        sessions.push(new_session(&s, &a.admin, &a.agent_id).await);
    }
    for session in &sessions {
        vendor.push(Reply::Slow {
            text: long_answer(),
            delay: std::time::Duration::from_millis(100),
        });
        let (status, body) = post_message(&s, &a.admin, session).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    eventually("three streams open", || async {
        vendor.open_streams() == 3
    })
    .await;
    let (status, out) = s
        .send(
            "POST",
            "/api/tools/calc/calc",
            Some(&a.admin),
            Some(json!({"expression": "20 + 22"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        vendor.request_count(),
        3,
        "the tool call did not wait for a stream to end"
    );
    let (status, _) = abort(&s, &a.admin, &sessions[0]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("the fourth stream got the freed slot", || async {
        vendor.request_count() == 4
    })
    .await;
}

/// What the ledger says of today.
async fn today(s: &TestServer, token: &str) -> Value {
    let (status, today) = s.send("GET", "/api/costs/today", Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{today}");
    today
}

/// Settings whose session lease is too long for its renewal to be what stops a run within a
/// test: the delete itself must.
fn long_lease() -> Settings {
    let mut settings = Settings::default();
    settings.agent.session_lease_s = 600;
    settings
}

both_backends!(
    deleting_a_session_stops_its_run_and_keeps_its_cost,
    |s: TestServer| async move {
        let s = TestServer::start_with(s.backend, long_lease()).await;
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o").await;
        start_slow_run(&s, &a.admin, &a.session_id, &vendor, &long_answer(), 100).await;
        let (status, body) = s
            .send(
                "DELETE",
                &format!("/api/sessions/{}", a.session_id),
                Some(&a.admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        eventually("the vendor stream closed", || async {
            vendor.open_streams() == 0
        })
        .await;
        // The call reported no usage (it was cut off): it is on the books at its estimate.
        let today = today(&s, &a.admin).await;
        assert_eq!(today["calls"], 1, "{today}");
        assert_eq!(today["estimated_calls"], 1, "{today}");
        assert_ne!(today["cost_usd"], "0.00", "{today}");
        let workspace = s
            .state
            .runtime
            .session_workspace_path(&a.session_id)
            .unwrap();
        assert!(!workspace.exists(), "{}", workspace.display());
        let (status, _) = abort(&s, &a.admin, &a.session_id).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
);

both_backends!(
    deleting_a_user_stops_their_runs,
    |s: TestServer| async move {
        let s = TestServer::start_with(s.backend, long_lease()).await;
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o").await;
        let bob = s.user("bob").await;
        let (_, agent) = s
            .send(
                "POST",
                "/api/agents",
                Some(&bob),
                Some(
                    json!({"name": "bobs", "provider": {"plugin": a.provider, "model": "gpt-4o"}}),
                ),
            )
            .await;
        let bobs = new_session(&s, &bob, agent["id"].as_str().unwrap()).await;
        start_slow_run(&s, &bob, &bobs, &vendor, &long_answer(), 100).await;
        let (_, users) = s
            .send("GET", "/api/admin/users", Some(&a.admin), None)
            .await;
        let bob_id = users["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == "bob")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, body) = s
            .send(
                "DELETE",
                &format!("/api/admin/users/{bob_id}"),
                Some(&a.admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        eventually("the vendor stream closed", || async {
            vendor.open_streams() == 0
        })
        .await;
        assert!(!s.state.agent.has_runs(), "no run left on the host");
    }
);

/// A delete or an abort that reaches another host than the one running the session's run
/// stops it when that host next renews its claim (every second with a 3 s lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_aborts_reach_the_host_running_the_session() {
    let mut settings = Settings::default();
    settings.agent.session_lease_s = 3;
    let s = TestServer::start_with(Backend::Postgres, settings.clone()).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let b = s.second_host_with(settings).await;

    let run = start_slow_run(&s, &a.admin, &a.session_id, &vendor, &long_answer(), 100).await;
    let (status, body) = abort(&b, &a.admin, &a.session_id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["run_id"], run);
    eventually("the aborted run ended", || async {
        let (_, run) = s
            .send("GET", &format!("/api/runs/{run}"), Some(&a.admin), None)
            .await;
        run["status"] == "aborted"
    })
    .await;
    assert_eq!(vendor.open_streams(), 0);

    let other = new_session(&s, &a.admin, &a.agent_id).await;
    start_slow_run(&s, &a.admin, &other, &vendor, &long_answer(), 100).await;
    let (status, _) = b
        .send(
            "DELETE",
            &format!("/api/sessions/{other}"),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The delete waited for the run to stop and store its end, costs included.
    let today = today(&s, &a.admin).await;
    assert_eq!(today["calls"], 2, "both calls are on the books: {today}");
    eventually("the deleted session's run stopped", || async {
        vendor.open_streams() == 0 && !s.state.agent.has_runs()
    })
    .await;
}

both_backends!(
    a_reconnect_replays_every_stored_event_and_a_client_ahead_is_told_to_resync,
    |s: TestServer| async move {
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o").await;
        vendor.push(Reply::text("hello"));
        let (_, out) = ask_and_wait(&s, &a.admin, &a.session_id, "hi").await;
        assert_eq!(out["status"], "completed", "{out}");
        // Many more stored events than one page of replay, or than the 10,000 a reconnect
        // once read at most.
        let db = s.state.db();
        let last = db.last_event_seq(&a.session_id).await.unwrap();
        let extra = 10_050;
        for chunk in 0..(extra / 1005) {
            let events = (0..1005)
                .map(|i| EventRow {
                    seq: last + 1 + chunk * 1005 + i,
                    run_id: "r".into(),
                    kind: "tool-result".into(),
                    data: json!({"n": chunk * 1005 + i}),
                })
                .collect();
            db.commit_step(StepWrite {
                session_id: &a.session_id,
                run_id: "r",
                events,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let newest = last + extra;
        let mut replay = events(&s, &a.admin, &a.session_id, Some("0")).await;
        let mut ids: Vec<i64> = Vec::new();
        while ids.last() != Some(&newest) {
            let e = replay.next().await.unwrap();
            ids.push(e.id.unwrap().parse().unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ids.iter().filter(|&&id| id > last).count() as i64, extra);

        let ahead = (newest + 100).to_string();
        let mut replay = events(&s, &a.admin, &a.session_id, Some(&ahead)).await;
        let e = replay.next().await.unwrap();
        assert_eq!(e.event, "resync");
        assert_eq!(e.data["last_event_id"], newest);
        assert_eq!(e.id.unwrap(), newest.to_string());
    }
);

both_backends!(
    unpriced_models_say_so_and_v1_history_is_stored_whole,
    |s: TestServer| async move {
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "my-local-model").await;
        let (_, agent) = s
            .send(
                "GET",
                &format!("/api/agents/{}", a.agent_id),
                Some(&a.admin),
                None,
            )
            .await;
        // On a local server the model is free, whatever its name: nothing to warn about.
        assert_eq!(agent["warnings"], json!([]), "{agent}");

        // Over a thousand messages of history, more than one statement's worth.
        let mut messages: Vec<Value> = (0..1200)
            .map(|i| {
                json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("m{i}")})
            })
            .collect();
        messages.push(json!({"role": "user", "content": "and now?"}));
        vendor.push(Reply::text("done"));
        let (status, out) = s
            .send(
                "POST",
                "/v1/chat/completions",
                Some(&a.admin),
                Some(json!({"model": "helper", "messages": messages})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{out}");
        let sent = vendor.requests().last().unwrap().body["messages"].clone();
        let texts: Vec<&str> = sent
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect();
        assert!(texts.contains(&"m0") && texts.contains(&"m1199"), "{sent}");

        // Pointed back at the vendor, the model has no price there: said in the agent's view
        // and in the costs.
        let (status, out) = s
            .send(
                "PUT",
                "/api/providers/openai/auth",
                Some(&a.admin),
                Some(json!({"base_url": null})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{out}");
        let (_, agent) = s
            .send(
                "GET",
                &format!("/api/agents/{}", a.agent_id),
                Some(&a.admin),
                None,
            )
            .await;
        let warning = agent["warnings"][0].as_str().unwrap_or_default();
        assert!(warning.contains("no price"), "{agent}");
        let today = today(&s, &a.admin).await;
        assert_eq!(
            today["unpriced_models"],
            json!(["my-local-model"]),
            "{today}"
        );
        let (_, breakdown) = s
            .send("GET", "/api/costs/breakdown", Some(&a.admin), None)
            .await;
        assert_eq!(breakdown["by_model"][0]["priced"], false, "{breakdown}");
        assert_eq!(breakdown["by_model"][0]["pricing"], "none", "{breakdown}");
    }
);
