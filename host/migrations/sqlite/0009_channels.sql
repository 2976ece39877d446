-- Chat channels: an instance of a channel plugin (its config and secrets are the instance's)
-- bound to one of its owner's agents, with who may talk to it.
CREATE TABLE channels (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    instance_id TEXT NOT NULL UNIQUE REFERENCES plugin_instances(id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    -- poll | webhook
    mode TEXT NOT NULL,
    -- pairing | allowlist | open | disabled
    access TEXT NOT NULL,
    -- Sender ids let in by `allowlist`, a JSON array.
    allowlist_json TEXT NOT NULL,
    -- In groups, answer only messages addressed to the bot.
    groups_need_address BIGINT NOT NULL,
    -- Whether the operator wants it running: hosts start it (again) when this is set.
    running BIGINT NOT NULL,
    -- Where the next poll starts; written with the events it follows, in one transaction.
    poll_cursor TEXT,
    -- The one host polling it, until the lease runs out (the database's clock, ms).
    lease_host TEXT,
    lease_until BIGINT,
    -- Who the bot is on its platform (JSON), learned at start.
    bot_json TEXT,
    last_error TEXT,
    last_activity_ms BIGINT,
    created_at_ms BIGINT NOT NULL
);

-- Every event a channel received, once: the primary key drops a re-delivery. `state` is
-- `pending` until it was handled (answered, refused or skipped), so one stored but not yet
-- handled when the host stopped is handled at the next start.
CREATE TABLE channel_events (
    channel_id TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event_json TEXT NOT NULL,
    state TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (channel_id, event_id)
);
CREATE INDEX channel_events_pending ON channel_events(channel_id, state, seq);

-- A chat (and thread) of a channel: whether it may talk to the agent, and its session.
CREATE TABLE channel_chats (
    channel_id TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    chat_id TEXT NOT NULL,
    -- '' for none: part of the key, and NULLs are never equal.
    thread_id TEXT NOT NULL,
    -- pending | paired | closed | moved
    state TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    session_id TEXT REFERENCES chat_sessions(id) ON DELETE SET NULL,
    -- The one-time code a pending chat was given, and until when it holds (ms).
    pair_code TEXT,
    pair_expires_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (channel_id, chat_id, thread_id)
);
CREATE UNIQUE INDEX channel_chats_pair_code ON channel_chats(pair_code);

-- Each message a reply to an event put on the platform, with the platform's id for it: a
-- reply cut off by a crash is finished by editing these, not by sending it again.
CREATE TABLE channel_outbox (
    channel_id TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    part BIGINT NOT NULL,
    message_id TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (channel_id, event_id, part)
);
