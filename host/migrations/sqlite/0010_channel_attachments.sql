-- Files on messages a channel received, by a short id the agent names to fetch one: the
-- platform's locator stays here, the model sees only the id and what the file is.
CREATE TABLE channel_attachments (
    id TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    channel_id TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    locator TEXT NOT NULL,
    name TEXT,
    mime_type TEXT,
    size BIGINT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX channel_attachments_session ON channel_attachments(session_id);
