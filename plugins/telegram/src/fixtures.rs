//! Bot API JSON recorded from the real service, byte for byte (`tests/fixtures/telegram`; its
//! README says where each comes from).

macro_rules! fixture {
    ($name:ident, $file:literal) => {
        pub const $name: &str = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/telegram/",
            $file
        ));
    };
}

fixture!(CALLBACK_QUERY, "callback-query.json");
fixture!(ERROR_403_BOT_BLOCKED, "error-403-bot-blocked.json");
fixture!(
    ERROR_409_TERMINATED,
    "error-409-conflict-terminated-by-other-getupdates.json"
);
fixture!(ERROR_RETRY_AFTER, "error-retry-after.json");
fixture!(ERROR_UNKNOWN, "error-unknown-description.json");
fixture!(UPDATES_POLL_ANSWER, "response-get-updates-poll-answer.json");
fixture!(
    UPDATES_WITH_MALFORMED,
    "response-get-updates-with-malformed.json"
);
fixture!(WEBHOOK_INFO, "response-get-webhook-info.json");
fixture!(OK_TRUE, "response-ok-true.json");
fixture!(MY_CHAT_MEMBER_KICKED, "update-my-chat-member-kicked.json");
fixture!(PRIVATE_TEXT_MESSAGE, "update-private-text-message.json");
fixture!(
    SUPERGROUP_COMMAND_REPLY,
    "update-supergroup-command-reply.json"
);
fixture!(UNKNOWN_KIND, "update-unknown-kind.json");
