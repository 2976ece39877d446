-- Installed packages live in the database so every host sharing it runs the same plugins.
CREATE TABLE plugins (
    name TEXT PRIMARY KEY NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    digest TEXT NOT NULL,
    wasm_sha256 TEXT,
    manifest_json TEXT NOT NULL,
    manifest_toml TEXT NOT NULL,
    package BLOB NOT NULL,
    installed_at_ms BIGINT NOT NULL
);

CREATE TABLE plugin_instances (
    id TEXT PRIMARY KEY NOT NULL,
    plugin TEXT NOT NULL REFERENCES plugins(name) ON DELETE CASCADE,
    config_json TEXT NOT NULL,
    approval_json TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Values are sealed with the master key (see secrets.rs); the key is never stored here.
CREATE TABLE instance_secrets (
    instance_id TEXT NOT NULL REFERENCES plugin_instances(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    PRIMARY KEY (instance_id, name)
);

CREATE TABLE plugin_kv (
    instance_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (instance_id, owner, key)
);
