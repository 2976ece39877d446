//! `kill -9` of `kelp serve` while a Telegram channel streams a reply, then a restart: every
//! update is answered, each by exactly one message (counted at the fake Bot API) — the reply
//! that was cut off is finished by editing the message already out — on SQLite and
//! PostgreSQL. (The one window no host can close, a crash between Telegram accepting a send
//! and the host recording it, is kept out of the test by crashing mid-stream, long after the
//! streaming message's send was recorded.)

use std::collections::BTreeMap;
use std::time::Duration;

use kelp_tests::process::KelpProcess;
use kelp_tests::telegram::{FakeTelegram, serve_with_channel};
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};

const KELP: &str = env!("CARGO_BIN_EXE_kelp");
const TOKEN: &str = "123456:TEST-token_value";
const CHATS: i64 = 6;
/// Long enough to stream for a few seconds, so edits show it half written.
const ANSWER: &str = "one two three four five six seven eight nine ten eleven twelve thirteen \
     fourteen fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two \
     twenty-three twenty-four twenty-five twenty-six twenty-seven twenty-eight twenty-nine";

/// Each chat's messages as the fake holds them, and how many sends went to it.
fn per_chat(fake: &FakeTelegram) -> BTreeMap<String, usize> {
    let mut sends = BTreeMap::new();
    for call in fake.calls_of("sendMessage") {
        *sends.entry(call.params["chat_id"].to_string()).or_insert(0) += 1;
    }
    sends
}

async fn updates_survive_a_crash(env: Vec<(String, String)>) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let fake = FakeTelegram::start(TOKEN).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    // Every answer streams slowly, so the crash lands mid-conversation.
    vendor.set_responder(|_| Reply::Slow {
        text: ANSWER.into(),
        delay: Duration::from_millis(80),
    });
    let data = tempfile::tempdir().unwrap();
    let server = KelpProcess::start(KELP, data.path(), &[], &env);
    serve_with_channel(&server.base, &fake, &vendor.base_url()).await;

    for chat in 1..=CHATS {
        fake.push_private_text(1000 + chat, &format!("question {chat}"));
    }
    // The second answer is half written — an edit of the chat sent to last that is not its
    // whole text, which comes only after that send was recorded: the host dies.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sent = fake.calls_of("sendMessage");
        let streaming = sent.last().is_some_and(|last| {
            fake.calls_of("editMessageText").iter().any(|edit| {
                edit.params["chat_id"] == last.params["chat_id"]
                    && edit.params["text"].as_str() != Some(ANSWER)
            })
        });
        if sent.len() >= 2 && streaming {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reply streamed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill_9();
    let before = per_chat(&fake);

    let server = KelpProcess::start(KELP, data.path(), &[], &env);
    let done = |fake: &FakeTelegram| {
        (1..=CHATS)
            .all(|chat| fake.texts_in(1000 + chat).last().map(String::as_str) == Some(ANSWER))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !done(&fake) {
        assert!(
            std::time::Instant::now() < deadline,
            "not every chat was answered after the restart: {:?}",
            (1..=CHATS)
                .map(|c| fake.texts_in(1000 + c))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every update confirmed to Telegram, none polled twice into a second answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.unconfirmed(), 0);
    let after = per_chat(&fake);
    assert_eq!(after.len() as i64, CHATS, "{after:?}");
    assert!(
        after.values().all(|n| *n == 1),
        "each update answered by one message: {after:?} (before the restart: {before:?})"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_answers_every_update_once_across_kill_9() {
    updates_survive_a_crash(vec![]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_answers_every_update_once_across_kill_9() {
    let schema = kelp_tests::PgSchema::create().await;
    updates_survive_a_crash(vec![("KELP_DATABASE_URL".into(), schema.url())]).await;
}
