-- Agents, chat sessions and their messages, and per-user settings. Everything is owned by a
-- user and goes with them: deleting a user cascades to all of it.
CREATE TABLE agents (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    instructions TEXT NOT NULL,
    provider_json TEXT NOT NULL,
    tools_json TEXT NOT NULL,
    skills_json TEXT NOT NULL,
    max_steps BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    -- Also serves the owner's agent list (name order) and ownership checks.
    UNIQUE (owner_id, name)
);

CREATE TABLE chat_sessions (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- SET NULL, not CASCADE: a session is the user's record of a conversation, and deleting
    -- the agent that held it must not silently erase that history. A session without an
    -- agent keeps its messages and can be given another agent.
    agent_id TEXT REFERENCES agents(id) ON DELETE SET NULL,
    title TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
-- The session list (newest-updated first, one owner) reads this index in order; `id` breaks
-- ties so pages are stable without a sort.
CREATE INDEX chat_sessions_owner_updated ON chat_sessions(owner_id, updated_at_ms, id);
-- ON DELETE SET NULL scans sessions by agent.
CREATE INDEX chat_sessions_agent ON chat_sessions(agent_id);

CREATE TABLE messages (
    id TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    role TEXT NOT NULL,
    content_json TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (session_id, seq)
);

CREATE TABLE user_settings (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    settings_json TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
