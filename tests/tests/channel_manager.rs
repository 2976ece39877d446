//! The channel manager end to end, on SQLite and PostgreSQL: the real Telegram plugin, a fake
//! Bot API server (Telegram's envelopes and errors), the real agent loop and a fake model
//! vendor. A message in, the agent's reply out (streamed by edits); strangers paired before
//! they are answered; groups answered only when addressed; Telegram's refusals acted on; a
//! restart answering what came in while the host was down, each update once.

use std::sync::Arc;
use std::time::Duration;

use kelp::channels::{Access, ChannelManager, ChannelSettings, NewChannel};
use kelp::plugins::InstallOptions;
use kelp::plugins::grants::Approval;
use kelp_tests::agent::{Setup, eventually, setup};
use kelp_tests::server::{Settings, TestServer};
use kelp_tests::telegram::{
    BOT_USERNAME, Failure, FakeTelegram, private_document, private_text, telegram_channel,
};
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use kelp_tests::{both_backends, components as c, manifest, pack};
use serde_json::{Value, json};

const TOKEN: &str = "123456:TEST-token_value";

struct Bot {
    fake: FakeTelegram,
    vendor: FakeVendor,
    a: Setup,
    owner: String,
    channel: String,
}

fn settings() -> ChannelSettings {
    ChannelSettings {
        poll_wait_s: 1,
        lease_s: 5,
        pairing_ttl_s: 600,
        retry_ms: 50,
        public_url: None,
        concurrent_chats: 8,
    }
}

fn manager(s: &TestServer, host: &str) -> Arc<ChannelManager> {
    ChannelManager::new(
        s.state.runtime.clone(),
        s.state.agent.clone(),
        settings(),
        host.to_owned(),
    )
}

/// An agent on the fake vendor, the Telegram plugin on the fake Bot API, and a channel of
/// the admin's between them, not started.
async fn bot(s: &TestServer, mgr: &ChannelManager, access: Access) -> Bot {
    let fake = FakeTelegram::start(TOKEN).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(s, &vendor, "gpt-4o").await;
    let (_, me) = s.send("GET", "/api/me", Some(&a.admin), None).await;
    let owner = me["id"].as_str().unwrap().to_owned();
    let channel = telegram_channel(s, mgr, &fake, &a.admin, &a.agent_id, access).await;
    Bot {
        fake,
        vendor,
        a,
        owner,
        channel,
    }
}

async fn texts_become(fake: &FakeTelegram, chat: i64, want: &[&str]) {
    eventually(&format!("chat {chat} shows {want:?}"), || async {
        fake.texts_in(chat) == want
    })
    .await;
}

both_backends!(
    a_message_is_answered_by_the_agent_with_a_streamed_reply,
    |s: TestServer| async move {
        let mgr = manager(&s, "host-a");
        let b = bot(&s, &mgr, Access::Open).await;
        b.vendor.push(Reply::Slow {
            text: "Hello from your agent, one word at a time".into(),
            delay: Duration::from_millis(150),
        });
        mgr.start(&b.channel).await.unwrap();
        b.fake.push_private_text(42, "hi there");
        texts_become(&b.fake, 42, &["Hello from your agent, one word at a time"]).await;
        // Sent once and then edited as the text grew; typing shown while the agent worked.
        assert_eq!(b.fake.calls_of("sendMessage").len(), 1);
        assert!(!b.fake.calls_of("editMessageText").is_empty());
        assert!(!b.fake.calls_of("sendChatAction").is_empty());
        // The platform was set up once: who the bot is, then polling mode.
        assert_eq!(b.fake.calls_of("getMe").len(), 1);
        assert_eq!(b.fake.calls_of("deleteWebhook").len(), 1);
        // The conversation is a session of the channel's agent, which continues.
        b.vendor.push(Reply::text("Still here."));
        b.fake.push_private_text(42, "and again");
        texts_become(
            &b.fake,
            42,
            &["Hello from your agent, one word at a time", "Still here."],
        )
        .await;
        let sent = b.vendor.requests();
        let last = &sent.last().unwrap().body["messages"];
        assert!(last.to_string().contains("hi there"), "{last}");
        // `/new` starts a fresh session.
        b.fake.push_private_text(42, "/new");
        eventually("the new-conversation note", || async {
            b.fake.texts_in(42).len() == 3
        })
        .await;
        b.vendor.push(Reply::text("Fresh start."));
        b.fake.push_private_text(42, "who are you?");
        eventually("the answer in the new session", || async {
            b.fake.texts_in(42).last().map(String::as_str) == Some("Fresh start.")
        })
        .await;
        let last = b.vendor.requests().last().unwrap().body["messages"].to_string();
        assert!(!last.contains("hi there"), "{last}");
        mgr.shutdown().await;
    }
);

both_backends!(
    a_stranger_is_paired_before_the_agent_answers,
    |s: TestServer| async move {
        let mgr = manager(&s, "host-a");
        let b = bot(&s, &mgr, Access::Pairing).await;
        mgr.start(&b.channel).await.unwrap();
        b.fake.push_private_text(77, "hello?");
        eventually("a pairing code", || async {
            b.fake.texts_in(77).len() == 1
        })
        .await;
        let note = b.fake.texts_in(77).remove(0);
        let code = note
            .split_whitespace()
            .last()
            .unwrap()
            .trim_end_matches('.')
            .to_owned();
        assert_eq!(code.len(), 8, "{note}");
        // Writing again does not make it send another code, nor reach the agent.
        b.fake.push_private_text(77, "please?");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(b.fake.texts_in(77).len(), 1);
        assert_eq!(b.vendor.request_count(), 0);
        // Another user cannot approve it; the owner can, once.
        assert!(mgr.approve("someone-else", &code).await.unwrap().is_none());
        let chat = mgr
            .approve(&b.owner, &code)
            .await
            .unwrap()
            .expect("approved");
        assert_eq!(chat.chat_id, "77");
        assert!(mgr.approve(&b.owner, &code).await.unwrap().is_none());
        b.vendor.push(Reply::text("Welcome!"));
        b.fake.push_private_text(77, "now?");
        eventually("the agent's answer", || async {
            b.fake.texts_in(77).last().map(String::as_str) == Some("Welcome!")
        })
        .await;
        assert_eq!(b.vendor.request_count(), 1);
        mgr.shutdown().await;
    }
);

/// A group message as Telegram sends it, `text` with a mention entity where it names the bot.
fn group_message(from: i64, text: &str) -> Value {
    let mut message = json!({
        "message_id": 9,
        "from": {"id": from, "is_bot": false, "first_name": "Member"},
        "chat": {"id": -4_001, "title": "Team", "type": "group"},
        "date": 1_700_000_000,
        "text": text,
    });
    let mention = format!("@{BOT_USERNAME}");
    if let Some(at) = text.find(&mention) {
        message["entities"] = json!([{"type": "mention", "offset": at, "length": mention.len()}]);
    }
    json!({ "message": message })
}

both_backends!(
    in_a_group_only_messages_addressed_to_the_bot_are_answered,
    |s: TestServer| async move {
        let mgr = manager(&s, "host-a");
        let b = bot(&s, &mgr, Access::Open).await;
        mgr.start(&b.channel).await.unwrap();
        b.fake
            .push_update(group_message(5, "lunch at noon, everyone?"));
        b.vendor.push(Reply::text("Noted."));
        b.fake
            .push_update(group_message(5, &format!("@{BOT_USERNAME} what is 6*7?")));
        texts_become(&b.fake, -4_001, &["Noted."]).await;
        // Only the addressed message reached the agent.
        assert_eq!(b.vendor.request_count(), 1);
        let asked = b.vendor.requests()[0].body["messages"].to_string();
        assert!(asked.contains("what is 6*7"), "{asked}");
        assert!(!asked.contains("lunch at noon"), "{asked}");
        mgr.shutdown().await;
    }
);

both_backends!(
    telegrams_refusals_are_acted_on,
    |s: TestServer| async move {
        let mgr = manager(&s, "host-a");
        let b = bot(&s, &mgr, Access::Open).await;
        mgr.start(&b.channel).await.unwrap();

        // 429: nothing is sent to the chat before the wait Telegram named has passed.
        b.fake.fail_next("sendMessage", Failure::RetryAfter(2));
        b.vendor.push(Reply::text("Patience pays."));
        b.fake.push_private_text(42, "hi");
        texts_become(&b.fake, 42, &["Patience pays."]).await;
        let sends = b.fake.calls_of("sendMessage");
        assert_eq!(sends.len(), 2, "the refused send and the one after");
        assert!(
            sends[1].at.duration_since(sends[0].at) >= Duration::from_secs(2),
            "sent again after {:?}",
            sends[1].at.duration_since(sends[0].at)
        );

        // Formatting Telegram cannot read goes again as plain text.
        b.fake.fail_next("sendMessage", Failure::CantParse);
        b.vendor.push(Reply::text("**Plain** after all"));
        b.fake.push_private_text(43, "format?");
        eventually("the plain resend", || async {
            b.fake.texts_in(43).len() == 1
        })
        .await;
        let last = b
            .fake
            .calls_of("sendMessage")
            .last()
            .unwrap()
            .params
            .clone();
        assert!(last.get("parse_mode").is_none(), "{last}");

        // A user who blocked the bot: the chat is closed, and the channel goes on.
        b.fake.fail_next("sendMessage", Failure::Blocked);
        b.vendor.push(Reply::text("You will not see this."));
        b.fake.push_private_text(44, "bye");
        eventually("the chat marked closed", || async {
            s.state
                .db()
                .get_channel_chat(&b.channel, "44", "")
                .await
                .unwrap()
                .is_some_and(|c| c.state == "closed")
        })
        .await;
        b.vendor.push(Reply::text("Still answering others."));
        b.fake.push_private_text(45, "anyone?");
        texts_become(&b.fake, 45, &["Still answering others."]).await;
        mgr.shutdown().await;
    }
);

both_backends!(
    a_restart_answers_what_came_in_meanwhile_each_update_once,
    |s: TestServer| async move {
        let first = manager(&s, "host-a");
        let b = bot(&s, &first, Access::Open).await;
        first.start(&b.channel).await.unwrap();
        b.vendor.push(Reply::text("one"));
        b.fake.push_private_text(42, "first");
        texts_become(&b.fake, 42, &["one"]).await;
        // The host goes away; updates arrive while it is down.
        first.shutdown().await;
        drop(first);
        b.vendor.push(Reply::text("two"));
        b.vendor.push(Reply::text("three"));
        b.fake.push_private_text(42, "second");
        b.fake.push_private_text(42, "third");
        // Another host (or this one restarted) resumes the running channel.
        let second = manager(&s, "host-b");
        assert_eq!(second.resume().await.unwrap(), 1);
        texts_become(&b.fake, 42, &["one", "two", "three"]).await;
        eventually("every update confirmed", || async {
            b.fake.unconfirmed() == 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(b.vendor.request_count(), 3, "each update answered once");
        assert_eq!(b.fake.calls_of("sendMessage").len(), 3);
        // A redelivered event is dropped by its id.
        let db = s.state.db();
        let stored = db
            .store_channel_batch(
                &b.channel,
                "host-b",
                &[("100000".into(), "{}".into())],
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(stored, Some(0));
        second.stop(&b.channel).await.unwrap();
        assert!(!db.get_channel(&b.channel).await.unwrap().unwrap().running);
        let _ = &b.a;
    }
);

/// `sha256=<hex>` of HMAC-SHA256 over `body`: the generic webhook channel's signature.
fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(s: &TestServer, channel: &str, body: &Value, signature: &str) -> (u16, Value) {
    let resp = s
        .http
        .post(s.url(&format!("/hooks/channels/{channel}")))
        .header("content-type", "application/json")
        .header("x-kelp-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn stored_events(s: &TestServer, channel: &str) -> i64 {
    let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM channel_events WHERE channel_id = $1")
        .bind(channel)
        .fetch_one(&s.state.db().pool)
        .await
        .unwrap();
    row.0
}

both_backends!(
    webhook_deliveries_are_verified_stored_once_and_answered,
    |s: TestServer| async move {
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o").await;
        let (_, me) = s.send("GET", "/api/me", Some(&a.admin), None).await;
        let owner = me["id"].as_str().unwrap().to_owned();
        let (addr, replies) = kelp_tests::receiver::start().await;
        let mut approval = Approval::default();
        approval.add_item(&format!("http-private:{addr}")).unwrap();
        let installed = s
            .state
            .runtime
            .install(
                &pack(
                    &manifest(c::PLUGIN_WEBHOOK_MANIFEST),
                    c::PLUGIN_WEBHOOK_WASM,
                ),
                InstallOptions {
                    instance_id: None,
                    config: json!({"reply_url": format!("http://{addr}/replies")}),
                    approval,
                    approve_changes: false,
                },
            )
            .await
            .unwrap();
        s.state
            .runtime
            .set_secret(&installed.instance_id, "WEBHOOK_SECRET", "hook-secret")
            .await
            .unwrap();
        let mgr = &s.state.channels;
        let channel = mgr
            .create(
                &owner,
                NewChannel {
                    instance_id: installed.instance_id,
                    agent_id: a.agent_id.clone(),
                    mode: None,
                    access: Access::Open,
                    allowlist: Vec::new(),
                    groups_need_address: true,
                },
            )
            .await
            .unwrap()
            .id;
        let delivery = json!({"id": "m-1", "chat": "conv-1", "text": "what is 6*7?"});
        // Stopped: the platform is told to come back later.
        let (status, body) = deliver(&s, &channel, &delivery, "sha256=00").await;
        assert_eq!(status, 503, "{body}");
        mgr.start(&channel).await.unwrap();

        // A wrong signature: refused, and nothing stored or answered.
        let (status, body) = deliver(
            &s,
            &channel,
            &delivery,
            &sign("not-the-secret", delivery.to_string().as_bytes()),
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
        let (status, _) = deliver(&s, &channel, &delivery, "").await;
        assert_eq!(status, 403);
        assert_eq!(stored_events(&s, &channel).await, 0);
        let (status, _) = deliver(&s, "no-such-channel", &delivery, "").await;
        assert_eq!(status, 404);

        // Signed: stored, answered 200 with the plugin's answer, and the agent's reply POSTed
        // to the service once, with its idempotency key.
        vendor.push(Reply::text("It is 42."));
        let signature = sign("hook-secret", delivery.to_string().as_bytes());
        let (status, body) = deliver(&s, &channel, &delivery, &signature).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"ok": true}));
        eventually("the reply reached the service", || async {
            !replies.lock().unwrap().is_empty()
        })
        .await;
        // The platform delivers it again (it saw no answer): stored once, answered once.
        let (status, _) = deliver(&s, &channel, &delivery, &signature).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(stored_events(&s, &channel).await, 1);
        let replies = replies.lock().unwrap().clone();
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0].1["text"], "It is 42.");
        assert_eq!(replies[0].1["chat"], "conv-1");
        assert!(replies[0].0.contains_key("idempotency-key"));
        assert_eq!(vendor.request_count(), 1);
        mgr.shutdown().await;
    }
);

both_backends!(
    different_chats_are_answered_at_once_each_in_its_order,
    |s: TestServer| async move {
        let mgr = manager(&s, "host-a");
        let b = bot(&s, &mgr, Access::Open).await;
        // Each answer streams slowly, so answers that overlap show as open streams at once.
        b.vendor.set_responder(|_| Reply::Slow {
            text: "a slow and steady answer to you".into(),
            delay: Duration::from_millis(250),
        });
        mgr.start(&b.channel).await.unwrap();
        for chat in [61, 62, 63] {
            b.fake.push_private_text(chat, "first");
        }
        b.fake.push_private_text(61, "second");
        eventually("three answers streaming at once", || async {
            b.vendor.open_streams() >= 3
        })
        .await;
        for chat in [62, 63] {
            texts_become(&b.fake, chat, &["a slow and steady answer to you"]).await;
        }
        texts_become(
            &b.fake,
            61,
            &[
                "a slow and steady answer to you",
                "a slow and steady answer to you",
            ],
        )
        .await;
        // Chat 61's second message was asked only after its first was answered: the request
        // for it holds the first answer.
        let asked: Vec<String> = b
            .vendor
            .requests()
            .iter()
            .map(|r| r.body["messages"].to_string())
            .filter(|m| m.contains("second"))
            .collect();
        assert_eq!(asked.len(), 1);
        assert!(
            asked[0].contains("a slow and steady answer"),
            "{}",
            asked[0]
        );
        mgr.shutdown().await;
    }
);

/// The attachment id the host listed in the newest user message the vendor was sent.
fn listed_attachment(body: &Value) -> Option<String> {
    let text = body["messages"].to_string();
    let at = text.rfind("att-")?;
    Some(text[at..at + 16].to_owned())
}

both_backends!(
    an_attachment_reaches_the_agent_which_fetches_it_with_a_tool,
    |s: TestServer| async move {
        let mgr = manager(&s, "host-a");
        let b = bot(&s, &mgr, Access::Open).await;
        let notes = b"meeting notes: buy milk";
        b.fake.add_file("BQACAgIAAxkBAAIC", notes);
        // The model fetches the listed file, then answers with what the tool quoted.
        b.vendor.set_responder(|body| {
            let messages = body["messages"].as_array().unwrap();
            let last = messages.last().unwrap();
            if last["role"] == "tool" {
                let result: Value =
                    serde_json::from_str(last["content"].as_str().unwrap()).unwrap();
                return Reply::text(format!(
                    "It says: {} (saved at {})",
                    result["text"].as_str().unwrap_or("?"),
                    result["path"].as_str().unwrap_or("?")
                ));
            }
            match listed_attachment(body) {
                Some(id) => Reply::tool_call("fetch_attachment", json!({ "id": id }).to_string()),
                None => Reply::text("no file here"),
            }
        });
        mgr.start(&b.channel).await.unwrap();
        b.fake.push_update(private_document(
            42,
            "BQACAgIAAxkBAAIC",
            "notes.txt",
            notes.len(),
            "what does this say?",
        ));
        eventually("the answer quoting the file", || async {
            b.fake
                .texts_in(42)
                .last()
                .is_some_and(|t| t.starts_with("It says: meeting notes: buy milk"))
        })
        .await;
        let answer = b.fake.texts_in(42).pop().unwrap();
        // The file was fetched from Telegram (getFile, then the download the host sent with
        // the token) and saved in the conversation's workspace.
        assert_eq!(b.fake.calls_of("getFile").len(), 1);
        let first = &b.vendor.requests()[0].body;
        let offered = first["tools"].to_string();
        assert!(offered.contains("fetch_attachment"), "{offered}");
        let asked = first["messages"].to_string();
        assert!(asked.contains("what does this say?"), "{asked}");
        assert!(
            asked.contains("notes.txt") && asked.contains("text/plain"),
            "{asked}"
        );
        // The platform's file id is not shown to the model.
        assert!(!asked.contains("BQACAgIAAxkBAAIC"), "{asked}");
        let path = answer
            .rsplit("saved at ")
            .next()
            .unwrap()
            .trim_end_matches(')');
        let (_, sessions) = s.send("GET", "/api/sessions", Some(&b.a.admin), None).await;
        let session = sessions["items"][0]["id"].as_str().unwrap().to_owned();
        let saved = s
            .state
            .runtime
            .session_workspace(&session)
            .unwrap()
            .join(path);
        assert_eq!(std::fs::read(&saved).unwrap(), notes);
        // A chat that sent no file is not offered the tool.
        b.fake.push_private_text(43, "just text");
        texts_become(&b.fake, 43, &["no file here"]).await;
        let plain = b.vendor.requests().last().unwrap().body["tools"].to_string();
        assert!(!plain.contains("fetch_attachment"), "{plain}");
        // An id of another conversation, or none at all, is refused to the model, not served.
        b.vendor.set_responder(|body| {
            let last = body["messages"].as_array().unwrap().last().unwrap().clone();
            if last["role"] == "tool" {
                return Reply::text(format!("tool said: {}", last["content"].as_str().unwrap()));
            }
            Reply::tool_call(
                "fetch_attachment",
                json!({"id": "att-000000000000"}).to_string(),
            )
        });
        b.fake.push_update(private_document(
            42,
            "BQACAgIAAxkBAAIC",
            "notes.txt",
            notes.len(),
            "again",
        ));
        eventually("the refusal", || async {
            b.fake
                .texts_in(42)
                .last()
                .is_some_and(|t| t.contains("no attachment") && t.contains("att-000000000000"))
        })
        .await;
        mgr.shutdown().await;
    }
);

both_backends!(
    a_polls_kv_writes_are_stored_with_its_batch_or_not_at_all,
    |s: TestServer| async move {
        use kelp::store::plugins::KvWrites;
        let mgr = manager(&s, "host-a");
        let b = bot(&s, &mgr, Access::Open).await;
        let db = s.state.db();
        let channel = db.get_channel(&b.channel).await.unwrap().unwrap();
        let kv = |key: &str, expect: Option<&[u8]>| KvWrites {
            instance_id: channel.instance_id.clone(),
            owner: String::new(),
            expectations: vec![(key.to_owned(), expect.map(<[u8]>::to_vec))],
            writes: vec![(key.to_owned(), Some(b"seen".to_vec()))],
            quota: 1 << 20,
        };
        let stored = |key: &'static str| {
            let id = channel.instance_id.clone();
            async move { db.kv_get(&id, "", key).await.unwrap() }
        };
        // Without the lease nothing is stored: neither the events nor the kv writes.
        let lost = db
            .store_channel_batch(
                &b.channel,
                "host-a",
                &[("1".into(), "{}".into())],
                Some("2"),
                Some(&kv("k1", None)),
            )
            .await
            .unwrap();
        assert_eq!(lost, None);
        assert_eq!(stored("k1").await, None);
        // With it, both.
        db.set_channel_running(&b.channel, true).await.unwrap();
        assert!(
            db.take_poll_lease(&b.channel, "host-a", 60_000)
                .await
                .unwrap()
        );
        let done = db
            .store_channel_batch(
                &b.channel,
                "host-a",
                &[("1".into(), "{}".into())],
                Some("2"),
                Some(&kv("k1", None)),
            )
            .await
            .unwrap();
        assert_eq!(done, Some(1));
        assert_eq!(stored("k1").await.as_deref(), Some(&b"seen"[..]));
        // A compare-and-swap that lost meanwhile refuses the whole batch: the event is not
        // stored and the cursor stays, so the platform delivers the batch again.
        let refused = db
            .store_channel_batch(
                &b.channel,
                "host-a",
                &[("3".into(), "{}".into())],
                Some("4"),
                Some(&kv("k1", None)),
            )
            .await;
        assert!(refused.is_err());
        assert_eq!(
            db.pending_channel_events(&b.channel, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        let after = db.get_channel(&b.channel).await.unwrap().unwrap();
        assert_eq!(after.poll_cursor.as_deref(), Some("2"));
    }
);

both_backends!(
    telegram_in_webhook_mode_is_set_up_verified_and_answered_once,
    |s: TestServer| async move {
        let with_url = Settings {
            channels: ChannelSettings {
                public_url: Some("https://kelp.example.com/".into()),
                ..settings()
            },
            ..Settings::default()
        };
        let s = TestServer::start_with(s.backend, with_url).await;
        let fake = FakeTelegram::start(TOKEN).await;
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o").await;
        // As an operator makes it: webhook mode, the bot token and the webhook's secret.
        let (status, channel) = s
            .send(
                "POST",
                "/api/channels",
                Some(&a.admin),
                Some(json!({
                    "plugin": "kelp/telegram",
                    "agent_id": a.agent_id,
                    "mode": "webhook",
                    "access": "open",
                    "config": {"api_base": fake.api_base()},
                    "secrets": {"BOT_TOKEN": TOKEN, "WEBHOOK_SECRET": "hook-secret-1"},
                    "grants": [format!("http-private:{}", fake.addr())],
                })),
            )
            .await;
        assert_eq!(status, 201, "{channel}");
        let id = channel["id"].as_str().unwrap().to_owned();
        // Telegram was pointed at this server's hook, with the secret it is to send back.
        eventually("setWebhook", || async { fake.webhook().is_some() }).await;
        assert_eq!(
            fake.webhook(),
            Some((
                format!("https://kelp.example.com/hooks/channels/{id}"),
                Some("hook-secret-1".into())
            ))
        );
        let mut update = private_text(42, "hello by webhook");
        update["update_id"] = json!(900_001);
        let post = |secret: Option<&'static str>| {
            let (url, body, http) = (
                s.url(&format!("/hooks/channels/{id}")),
                update.to_string(),
                s.http.clone(),
            );
            async move {
                let mut req = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(secret) = secret {
                    req = req.header("x-telegram-bot-api-secret-token", secret);
                }
                req.send().await.unwrap().status().as_u16()
            }
        };
        // No secret, or the wrong one: 403, and nothing stored.
        assert_eq!(post(None).await, 403);
        assert_eq!(post(Some("hook-secret-2")).await, 403);
        assert_eq!(stored_events(&s, &id).await, 0);
        // The right one: stored, answered 200, and the agent's reply sent.
        vendor.push(Reply::text("Hi from the webhook side."));
        assert_eq!(post(Some("hook-secret-1")).await, 200);
        texts_become(&fake, 42, &["Hi from the webhook side."]).await;
        // Telegram delivers it again (as after a lost answer): 200, and not answered twice.
        assert_eq!(post(Some("hook-secret-1")).await, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(stored_events(&s, &id).await, 1);
        assert_eq!(vendor.request_count(), 1);
        assert_eq!(fake.calls_of("sendMessage").len(), 1);
        // The operator switches to polling: the webhook is deleted, and polled updates are
        // answered.
        let (status, changed) = s
            .send(
                "PUT",
                &format!("/api/channels/{id}"),
                Some(&a.admin),
                Some(json!({"mode": "poll"})),
            )
            .await;
        assert_eq!(status, 200, "{changed}");
        assert_eq!(changed["mode"], "poll");
        eventually("deleteWebhook", || async { fake.webhook().is_none() }).await;
        vendor.push(Reply::text("Now by polling."));
        fake.push_private_text(42, "and now?");
        texts_become(&fake, 42, &["Hi from the webhook side.", "Now by polling."]).await;
        s.state.channels.shutdown().await;
    }
);

both_backends!(
    two_hosts_on_one_database_answer_each_update_once,
    |s: TestServer| async move {
        // Two managers with host ids of their own, on one database: one holds the lease and
        // polls; when it goes away, the other takes over. Telegram would answer two pollers
        // with 409, and each update is answered once either way.
        let a = manager(&s, "host-a");
        let b = bot(&s, &a, Access::Open).await;
        let other = manager(&s, "host-b");
        b.vendor.set_responder(|_| Reply::text("once"));
        a.start(&b.channel).await.unwrap();
        assert_eq!(other.resume().await.unwrap(), 1);
        for chat in 0..20 {
            b.fake.push_private_text(100 + chat, "hello");
        }
        eventually("every chat answered", || async {
            (0..20).all(|chat| b.fake.texts_in(100 + chat) == ["once"])
        })
        .await;
        // Only one host polled: no poll was cut short by another's (which Telegram ends with
        // a 409 for the older).
        assert!(!b.fake.calls_of("getUpdates").is_empty());
        assert_eq!(b.fake.polls_cut(), 0);
        assert_eq!(b.fake.calls_of("getMe").len(), 1, "set up by one host");
        // The lease holder goes away; the other host takes the channel over.
        a.shutdown().await;
        for chat in 20..30 {
            b.fake.push_private_text(100 + chat, "hello");
        }
        eventually("the other host answers", || async {
            (20..30).all(|chat| b.fake.texts_in(100 + chat) == ["once"])
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(b.vendor.request_count(), 30, "each update answered once");
        assert_eq!(b.fake.calls_of("sendMessage").len(), 30);
        other.shutdown().await;
    }
);
