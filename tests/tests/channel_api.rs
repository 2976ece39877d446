//! Channels through the HTTP API, on SQLite and PostgreSQL: made by an admin from an
//! installed channel plugin (a new instance with its token), started and stopped, their chats
//! listed, pairings approved, deleted with their instance; another user sees none of it.

use kelp_tests::agent::{Setup, eventually, setup, upload};
use kelp_tests::server::TestServer;
use kelp_tests::telegram::FakeTelegram;
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use kelp_tests::{both_backends, components as c, manifest, pack};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "123456:TEST-token_value";

async fn instances(s: &TestServer, token: &str) -> usize {
    let (_, list) = s
        .send("GET", "/api/plugin-instances", Some(token), None)
        .await;
    list["items"].as_array().unwrap().len()
}

async fn pending_chat(s: &TestServer, token: &str, channel: &str) -> Value {
    let path = format!("/api/channels/{channel}/chats");
    eventually("a pending chat", || async {
        let (_, chats) = s.send("GET", &path, Some(token), None).await;
        chats["items"][0]["state"] == "pending"
    })
    .await;
    let (_, chats) = s.send("GET", &path, Some(token), None).await;
    chats["items"][0].clone()
}

/// The fake Bot API, an agent on the fake vendor, and the Telegram plugin installed.
async fn with_telegram_installed(s: &TestServer) -> (FakeTelegram, FakeVendor, Setup) {
    let fake = FakeTelegram::start(TOKEN).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(s, &vendor, "gpt-4o").await;
    let package = pack(
        &manifest(c::PLUGIN_TELEGRAM_MANIFEST),
        c::PLUGIN_TELEGRAM_WASM,
    );
    let (status, body) = upload(s, &a.admin, package).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (fake, vendor, a)
}

both_backends!(
    channels_are_made_paired_and_removed_through_the_api,
    |s: TestServer| async move {
        let (fake, vendor, a) = with_telegram_installed(&s).await;
        let before = instances(&s, &a.admin).await;
        let new_channel = |extra: Value| {
            let mut body = json!({
                "plugin": "kelp/telegram",
                "agent_id": a.agent_id,
                "config": {"api_base": fake.api_base()},
                "secrets": {"BOT_TOKEN": TOKEN},
                "grants": [format!("http-private:{}", fake.addr())],
            });
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            body
        };

        // Refusals leave nothing behind.
        for (extra, why) in [
            (json!({"plugin": "kelp/openai"}), "not a channel plugin"),
            (json!({"agent_id": "nope"}), "not one of your agents"),
            (
                json!({"secrets": {"NOT_DECLARED": "x"}}),
                "a secret the plugin does not declare",
            ),
            (json!({"mode": "carrier-pigeon"}), "an unknown mode"),
        ] {
            let (status, body) = s
                .send(
                    "POST",
                    "/api/channels",
                    Some(&a.admin),
                    Some(new_channel(extra)),
                )
                .await;
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
                "{why}: {status} {body}"
            );
        }
        assert_eq!(instances(&s, &a.admin).await, before);
        // Only an admin makes one (it makes a plugin instance and approves what it asks).
        let bob = s.user("bob").await;
        let (status, _) = s
            .send(
                "POST",
                "/api/channels",
                Some(&bob),
                Some(new_channel(json!({}))),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let (status, channel) = s
            .send(
                "POST",
                "/api/channels",
                Some(&a.admin),
                Some(new_channel(json!({}))),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{channel}");
        let id = channel["id"].as_str().unwrap().to_owned();
        assert_eq!(channel["running"], true);
        assert_eq!(channel["access"], "pairing");
        assert_eq!(channel["mode"], "poll");
        assert!(!channel.to_string().contains(TOKEN), "{channel}");
        assert_eq!(instances(&s, &a.admin).await, before + 1);

        // A stranger gets a code; the chat shows it; the owner approves it; the agent answers.
        fake.push_private_text(77, "hello?");
        let chat = pending_chat(&s, &a.admin, &id).await;
        let code = chat["pair_code"].as_str().unwrap().to_owned();
        assert!(fake.texts_in(77)[0].contains(&code));
        let (status, _) = s
            .send(
                "POST",
                "/api/channels/pairings",
                Some(&bob),
                Some(json!({"code": code})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "only the channel's owner approves"
        );
        let (status, paired) = s
            .send(
                "POST",
                "/api/channels/pairings",
                Some(&a.admin),
                Some(json!({"code": code})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{paired}");
        assert_eq!(paired["state"], "paired");
        vendor.push(Reply::text("Hello, approved friend."));
        fake.push_private_text(77, "now?");
        eventually("the agent's answer", || async {
            fake.texts_in(77).last().map(String::as_str) == Some("Hello, approved friend.")
        })
        .await;
        let (_, seen) = s
            .send("GET", &format!("/api/channels/{id}"), Some(&a.admin), None)
            .await;
        assert_eq!(seen["bot"]["handle"], kelp_tests::telegram::BOT_USERNAME);

        // Changed: another agent of the owner's takes the chat over in a new conversation;
        // who may talk changes; a foreign agent, another user and an unknown field are refused.
        let paired_session = pending_or_paired_session(&s, &a.admin, &id).await;
        assert!(paired_session.is_some());
        let (status, other_agent) = s
            .send(
                "POST",
                "/api/agents",
                Some(&a.admin),
                Some(json!({
                    "name": "second",
                    "instructions": "You are the second agent.",
                    "provider": {"plugin": a.provider, "model": "gpt-4o", "max_tokens": 100},
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{other_agent}");
        let other_agent = other_agent["id"].as_str().unwrap().to_owned();
        let put = |token: &str, body: Value| {
            let (path, token) = (format!("/api/channels/{id}"), token.to_owned());
            let s = &s;
            async move { s.send("PUT", &path, Some(&token), Some(body)).await }
        };
        let (status, _) = put(&bob, json!({"access": "open"})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = put(&a.admin, json!({"agent_id": "nope"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, _) = put(&a.admin, json!({"colour": "blue"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, changed) = put(
            &a.admin,
            json!({"agent_id": other_agent, "access": "allowlist", "allowlist": ["77"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{changed}");
        assert_eq!(changed["agent_id"], other_agent.as_str());
        assert_eq!(changed["access"], "allowlist");
        assert_eq!(changed["allowlist"], json!(["77"]));
        assert_eq!(changed["mode"], "poll", "what was not given is kept");
        assert_eq!(pending_or_paired_session(&s, &a.admin, &id).await, None);
        vendor.push(Reply::text("The second agent here."));
        fake.push_private_text(77, "who is this?");
        eventually("the second agent's answer", || async {
            fake.texts_in(77).last().map(String::as_str) == Some("The second agent here.")
        })
        .await;
        let asked = vendor.requests().last().unwrap().body["messages"].to_string();
        assert!(asked.contains("You are the second agent."), "{asked}");
        assert!(!asked.contains("now?"), "a new conversation: {asked}");

        // Another user sees none of it.
        let (_, list) = s.send("GET", "/api/channels", Some(&bob), None).await;
        assert_eq!(list["total"], 0);
        let (status, _) = s
            .send("GET", &format!("/api/channels/{id}"), Some(&bob), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, list) = s.send("GET", "/api/channels", Some(&a.admin), None).await;
        assert_eq!(list["total"], 1);

        // Stop, start, delete (its instance goes with it).
        let (status, stopped) = s
            .send(
                "POST",
                &format!("/api/channels/{id}/stop"),
                Some(&a.admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(stopped["running"], false);
        let (_, started) = s
            .send(
                "POST",
                &format!("/api/channels/{id}/start"),
                Some(&a.admin),
                None,
            )
            .await;
        assert_eq!(started["running"], true);
        let (status, _) = s
            .send("DELETE", &format!("/api/channels/{id}"), Some(&bob), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = s
            .send(
                "DELETE",
                &format!("/api/channels/{id}"),
                Some(&a.admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = s
            .send("GET", &format!("/api/channels/{id}"), Some(&a.admin), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(instances(&s, &a.admin).await, before);
        s.state.channels.shutdown().await;
    }
);

/// The session of the channel's first chat, if it has one.
async fn pending_or_paired_session(s: &TestServer, token: &str, channel: &str) -> Option<String> {
    let path = format!("/api/channels/{channel}/chats");
    let (_, chats) = s.send("GET", &path, Some(token), None).await;
    chats["items"][0]["session_id"].as_str().map(str::to_owned)
}

/// Runs the `kelp` CLI against the server as the signed-in admin.
fn kelp(s: &TestServer, token: &str, args: &[&str], stdin: &str) -> String {
    let user = kelp_tests::process::CliUser::new(env!("CARGO_BIN_EXE_kelp"));
    let out = user.run_with(args, &[("KELP_URL", &s.base), ("KELP_TOKEN", token)], stdin);
    assert!(out.success, "kelp {args:?} failed\n{out}");
    out.stdout
}

both_backends!(
    the_cli_adds_a_telegram_channel_and_approves_a_pairing,
    |s: TestServer| async move {
        // As a new user has it: the Telegram plugin is built into `kelp`, not installed.
        let fake = FakeTelegram::start(TOKEN).await;
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o").await;
        let installed = async |s: &TestServer| {
            let (status, _) = s
                .send("GET", "/api/plugins/kelp/telegram", Some(&a.admin), None)
                .await;
            status == StatusCode::OK
        };
        assert!(!installed(&s).await);
        let config = json!({"api_base": fake.api_base()}).to_string();
        let grant = format!("http-private:{}", fake.addr());
        // A refusal after the built-in package was installed on the way (an empty token is
        // refused when it is sealed) leaves nothing, the package included.
        let (status, body) = s
            .send(
                "POST",
                "/api/channels",
                Some(&a.admin),
                Some(json!({
                    "plugin": "kelp/telegram",
                    "agent_id": a.agent_id,
                    "config": {"api_base": fake.api_base()},
                    "secrets": {"BOT_TOKEN": ""},
                    "grants": [format!("http-private:{}", fake.addr())],
                })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(!installed(&s).await);
        // The token comes on standard input, as `printf %s "$TOKEN" | kelp channel add …`.
        let added = kelp(
            &s,
            &a.admin,
            &[
                "channel",
                "add",
                "telegram",
                "--agent",
                "helper",
                "--instance-config",
                &config,
                "--grant",
                &grant,
            ],
            TOKEN,
        );
        assert!(added.contains("started"), "{added}");
        assert!(installed(&s).await);
        let id = added.split_whitespace().nth(2).unwrap().to_owned();
        let listed = kelp(&s, &a.admin, &["channel", "list"], "");
        assert!(
            listed.contains(&id) && listed.contains("running"),
            "{listed}"
        );

        fake.push_private_text(88, "hi bot");
        let chat = pending_chat(&s, &a.admin, &id).await;
        let code = chat["pair_code"].as_str().unwrap();
        let status = kelp(&s, &a.admin, &["channel", "status", &id], "");
        assert!(
            status.contains(code) && status.contains("@kelp_test_bot"),
            "{status}"
        );
        let approved = kelp(&s, &a.admin, &["channel", "pair", "approve", code], "");
        assert!(approved.contains("approved chat 88"), "{approved}");
        vendor.push(Reply::text("Paired and answering."));
        fake.push_private_text(88, "hello again");
        eventually("the agent's answer", || async {
            fake.texts_in(88).last().map(String::as_str) == Some("Paired and answering.")
        })
        .await;

        let stopped = kelp(&s, &a.admin, &["channel", "stop", &id], "");
        assert!(stopped.contains("stopped"), "{stopped}");
        kelp(&s, &a.admin, &["channel", "remove", &id], "");
        let listed = kelp(&s, &a.admin, &["channel", "list"], "");
        assert!(!listed.contains(&id), "{listed}");
        s.state.channels.shutdown().await;
    }
);
