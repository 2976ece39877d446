//! The host driving channel plugins through the contract's channel interface: the real
//! Telegram plugin against a fake Bot API server that speaks Telegram's envelopes and
//! errors, and the generic webhook plugin. What the platform answers reaches the host as the
//! outcomes it must act on; the bot token reaches only the fake, never the guest.

use kelp::channels::model::{
    Action, ChannelError, Chat, EventKind, Outbound, Outcome, Setup, TextFormat,
};
use kelp_tests::telegram::{BOT_ID, BOT_USERNAME, Failure, FakeTelegram};
use kelp_tests::{Host, components as c, manifest};
use serde_json::{Value, json};

const TOKEN: &str = "123456:TEST-token_value";

/// The Telegram plugin installed against `fake`, with its token set: the instance id.
async fn telegram(host: &Host, fake: &FakeTelegram) -> String {
    let id = host
        .install(
            &manifest(c::PLUGIN_TELEGRAM_MANIFEST),
            c::PLUGIN_TELEGRAM_WASM,
            &["kv", &format!("http-private:{}", fake.addr())],
            json!({"api_base": fake.api_base()}),
        )
        .await
        .unwrap();
    host.runtime
        .set_secret(&id, "BOT_TOKEN", TOKEN)
        .await
        .unwrap();
    id
}

fn send(chat: i64, text: &str, key: &str) -> Action {
    Action::Send(Outbound {
        chat: Chat {
            id: chat.to_string(),
            thread: None,
        },
        text: text.into(),
        format: TextFormat::Markdown,
        reply_to: None,
        buttons: Vec::new(),
        idempotency_key: key.into(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn telegram_set_up_polled_and_answered_through_the_plugin() {
    let fake = FakeTelegram::start(TOKEN).await;
    let host = Host::new().await;
    let id = telegram(&host, &fake).await;
    let rt = &host.runtime;

    // Who the bot is, then polling mode.
    let identified = rt
        .channel_act(&id, &Action::Setup(Setup::Identify))
        .await
        .unwrap();
    match &identified[..] {
        [Outcome::Identified(me)] => {
            assert_eq!(me.id, BOT_ID.to_string());
            assert_eq!(me.handle.as_deref(), Some(BOT_USERNAME));
        }
        other => panic!("{other:?}"),
    }
    let polling = rt
        .channel_act(&id, &Action::Setup(Setup::UsePolling))
        .await
        .unwrap();
    assert!(matches!(&polling[..], [Outcome::Done(_)]), "{polling:?}");
    assert_eq!(fake.calls_of("deleteWebhook").len(), 1);

    // Two messages come in; the next poll from the returned cursor confirms them.
    let first = fake.push_private_text(42, "hello");
    let second = fake.push_private_text(42, "are you there?");
    let batch = rt.channel_poll(&id, None, 0).await.unwrap();
    let ids: Vec<&str> = batch.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [first.to_string(), second.to_string()]);
    match &batch.events[0].kind {
        EventKind::Message(m) => {
            assert_eq!(m.text, "hello");
            assert_eq!(m.chat.id, "42");
            assert!(m.addressed, "a direct chat is always addressed");
        }
        other => panic!("{other:?}"),
    }
    let cursor = batch.next_cursor.clone().expect("a cursor past the batch");
    assert_eq!(cursor, (second + 1).to_string());
    assert_eq!(fake.unconfirmed(), 2);
    let empty = rt.channel_poll(&id, Some(&cursor), 0).await.unwrap();
    assert!(empty.events.is_empty(), "{empty:?}");
    assert_eq!(fake.unconfirmed(), 0);
    // The token went where the manifest binds it, in the path, and only there.
    let polls = fake.calls_of("getUpdates");
    assert_eq!(polls.len(), 2);
    assert!(!polls[1].params.to_string().contains(TOKEN));

    // A recorded batch with updates the plugin cannot read: each still an event, and the
    // cursor moves past all of them (no stall).
    let recorded: Value = serde_json::from_str(include_str!(
        "../fixtures/telegram/response-get-updates-with-malformed.json"
    ))
    .unwrap();
    let recorded = recorded["result"].as_array().unwrap().clone();
    let last = recorded.last().unwrap()["update_id"].as_i64().unwrap();
    // The fake hands out updates in the order given; these ids are below the cursor, so a
    // fresh poll (no cursor) takes them.
    for update in recorded {
        fake.push_raw(update);
    }
    let batch = rt.channel_poll(&id, None, 0).await.unwrap();
    assert_eq!(batch.events.len(), 4, "{batch:?}");
    assert!(
        batch
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Ignored { .. })),
        "{batch:?}"
    );
    assert_eq!(batch.next_cursor, Some((last + 1).to_string()));

    // A reply: Markdown sent as Telegram HTML, escaped; the message id comes back.
    let sent = rt
        .channel_act(&id, &send(42, "**6 × 7** is <42> & more", "r1-0"))
        .await
        .unwrap();
    let Some(Outcome::Done(Some(message_id))) = sent.first().cloned() else {
        panic!("{sent:?}");
    };
    assert_eq!(fake.texts_in(42), ["6 × 7 is <42> & more"]);
    // Editing to the same text is what Telegram calls "not modified": done all the same.
    let edit = Action::Edit(kelp::channels::model::Edit {
        chat: Chat {
            id: "42".into(),
            thread: None,
        },
        message_id: message_id.clone(),
        text: "**6 × 7** is <42> & more".into(),
        format: TextFormat::Markdown,
    });
    let edited = rt.channel_act(&id, &edit).await.unwrap();
    assert!(matches!(&edited[..], [Outcome::Done(_)]), "{edited:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn telegram_refusals_become_the_outcomes_the_host_acts_on() {
    let fake = FakeTelegram::start(TOKEN).await;
    let host = Host::new().await;
    let id = telegram(&host, &fake).await;
    let rt = &host.runtime;
    let act = async |action: Action| rt.channel_act(&id, &action).await.unwrap();

    fake.fail_next("sendMessage", Failure::RetryAfter(3));
    assert_eq!(act(send(42, "a", "k1")).await, [Outcome::RateLimited(3)]);
    fake.fail_next("sendMessage", Failure::Blocked);
    assert!(matches!(
        &act(send(42, "a", "k2")).await[..],
        [Outcome::ChatClosed(_)]
    ));
    fake.fail_next("sendMessage", Failure::CantParse);
    assert!(matches!(
        &act(send(42, "a", "k3")).await[..],
        [Outcome::BadFormat(_)]
    ));
    fake.fail_next("sendMessage", Failure::Migrated(-1_001_234));
    assert_eq!(
        act(send(42, "a", "k4")).await,
        [Outcome::ChatMoved("-1001234".into())]
    );
    fake.fail_next("sendMessage", Failure::Status(502, "Bad Gateway".into()));
    assert!(matches!(
        &act(send(42, "a", "k5")).await[..],
        [Outcome::Transient(_)]
    ));
    assert!(fake.texts_in(42).is_empty(), "nothing was sent");

    // Polls: the two 409s told apart, and a 429 with its wait.
    fake.fail_next("getUpdates", Failure::OtherPoller);
    assert!(matches!(
        rt.channel_poll(&id, None, 0).await,
        Err(ChannelError::PollConflict(_))
    ));
    fake.fail_next("getUpdates", Failure::RetryAfter(9));
    assert_eq!(
        rt.channel_poll(&id, None, 0).await,
        Err(ChannelError::RateLimited(9))
    );
    let set = act(Action::Setup(Setup::UseWebhook(
        "https://kelp.example.com/hooks/channels/t".into(),
    )))
    .await;
    assert!(matches!(&set[..], [Outcome::Done(_)]), "{set:?}");
    assert!(matches!(
        rt.channel_poll(&id, None, 0).await,
        Err(ChannelError::WebhookActive(_))
    ));

    // A wrong token: the platform's 404 is the credentials refused.
    host.runtime
        .set_secret(&id, "BOT_TOKEN", "999:wrong")
        .await
        .unwrap();
    assert!(matches!(
        &act(Action::Setup(Setup::Identify)).await[..],
        [Outcome::Unauthorized(_)]
    ));
}

/// The generic webhook channel is not Telegram-shaped: it only takes webhooks, cannot edit,
/// and POSTs each reply whole to the service with an idempotency key.
#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_channel_reads_deliveries_and_posts_replies() {
    let (addr, seen) = kelp_tests::receiver::start().await;
    let host = Host::new().await;
    let id = host
        .install(
            &manifest(c::PLUGIN_WEBHOOK_MANIFEST),
            c::PLUGIN_WEBHOOK_WASM,
            &[&format!("http-private:{addr}")],
            json!({"reply_url": format!("http://{addr}/replies")}),
        )
        .await
        .unwrap();
    let rt = &host.runtime;
    let hook = |body: &[u8], signature: Option<String>| {
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        headers.extend(signature.map(|s| ("X-Kelp-Signature".to_owned(), s)));
        kelp::net::OutboundRequest {
            method: "POST".into(),
            url: format!("http://127.0.0.1/hooks/channels/{id}"),
            headers,
            body: Some(body.to_vec()),
        }
    };
    let sign = |secret: &str, body: &[u8]| {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        Some(format!(
            "sha256={}",
            hex::encode(mac.finalize().into_bytes())
        ))
    };

    let delivery = json!({"id": "msg-1", "chat": "conv-7", "sender": {"id": "u4", "name": "Ada"}, "text": "hi"})
        .to_string()
        .into_bytes();
    // No secret set yet: nothing can be verified, so nothing is let through.
    assert!(matches!(
        rt.channel_webhook(&id, hook(&delivery, sign("s3cret", &delivery)))
            .await,
        Err(ChannelError::Unauthorized(_))
    ));
    rt.set_secret(&id, "WEBHOOK_SECRET", "s3cret")
        .await
        .unwrap();
    for wrong in [None, sign("guess", &delivery), Some("sha256=00".into())] {
        assert!(matches!(
            rt.channel_webhook(&id, hook(&delivery, wrong)).await,
            Err(ChannelError::Unauthorized(_))
        ));
    }
    let batch = rt
        .channel_webhook(&id, hook(&delivery, sign("s3cret", &delivery)))
        .await
        .unwrap();
    assert_eq!(batch.status, 200);
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].id, "msg-1");
    match &batch.events[0].kind {
        EventKind::Message(m) => {
            assert_eq!((m.chat.id.as_str(), m.text.as_str()), ("conv-7", "hi"));
            assert_eq!(m.sender.name.as_deref(), Some("Ada"));
        }
        other => panic!("{other:?}"),
    }
    // A body it cannot read is still answered (so the service does not retry forever) and
    // still an event, which the host skips.
    let junk = rt
        .channel_webhook(&id, hook(b"not json", sign("s3cret", b"not json")))
        .await
        .unwrap();
    assert!(
        matches!(&junk.events[..], [e] if matches!(e.kind, EventKind::Ignored { .. })),
        "{junk:?}"
    );

    let mut reply = send(0, "The answer is 42.", "run-1-part-0");
    if let Action::Send(out) = &mut reply {
        out.chat.id = "conv-7".into();
    }
    let done = rt.channel_act(&id, &reply).await.unwrap();
    assert_eq!(done, [Outcome::Done(Some("r-1".into()))]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1["chat"], "conv-7");
    assert_eq!(seen[0].1["text"], "The answer is 42.");
    assert_eq!(seen[0].0["idempotency-key"], "run-1-part-0");
    // No typing on this platform: nothing is sent.
    let typing = rt
        .channel_act(
            &id,
            &Action::Typing(Chat {
                id: "conv-7".into(),
                thread: None,
            }),
        )
        .await
        .unwrap();
    assert!(typing.is_empty());
}
