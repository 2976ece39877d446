-- Agent runs, the boundary events clients replay after a reconnect, and the usage ledger.
CREATE TABLE runs (
    id TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- The process that runs it: at start a host marks only its own unfinished runs, so hosts
    -- sharing one PostgreSQL do not mark each other's live runs.
    host_id TEXT NOT NULL,
    -- running, completed, aborted, failed, interrupted
    status TEXT NOT NULL,
    error_json TEXT,
    steps BIGINT NOT NULL,
    usage_json TEXT NOT NULL,
    cost_micros BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT
);
CREATE INDEX runs_session ON runs(session_id, started_at_ms);
CREATE INDEX runs_host_status ON runs(host_id, status);

CREATE TABLE session_events (
    session_id TEXT NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data_json TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- One row per provider call. Not tied to the session by a foreign key: spending stays on the
-- books when a session is deleted.
CREATE TABLE usage_ledger (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    run_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    -- Millionths of a US dollar.
    cost_micros BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX usage_ledger_owner_time ON usage_ledger(owner_id, created_at_ms);
