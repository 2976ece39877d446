-- Users, their login sessions and API tokens, and invite codes. Tokens and session ids are
-- stored only as their SHA-256 (they are 256-bit random values: a fast hash suffices, and
-- argon2 on every request would cap the server at a few hundred requests per second).
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    active BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE login_sessions (
    token_sha256 TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX login_sessions_user ON login_sessions(user_id);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    last_used_at_ms BIGINT,
    revoked BIGINT NOT NULL
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

CREATE TABLE invites (
    id TEXT PRIMARY KEY NOT NULL,
    code_sha256 TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    max_uses BIGINT NOT NULL,
    uses BIGINT NOT NULL,
    expires_at_ms BIGINT,
    revoked BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- One row once the first admin exists: its primary key makes a second concurrent first-run
-- setup fail on any backend, where a "no users yet" check alone could let two through.
CREATE TABLE setup_marker (
    id BIGINT PRIMARY KEY NOT NULL
);
