-- The registry's state. Times are milliseconds since the Unix epoch; flags are 0/1 integers
-- (the same in both backends, which sqlx's Any driver reads alike).

CREATE TABLE accounts (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL
);

-- API tokens, stored as their SHA-256: a leaked database holds no usable token.
CREATE TABLE tokens (
    token_sha256 TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_ms BIGINT NOT NULL
);

CREATE TABLE namespaces (
    name TEXT PRIMARY KEY,
    owner_id BIGINT NOT NULL REFERENCES accounts(id),
    created_ms BIGINT NOT NULL
);

-- Each namespace's hash-chained key log, one signed entry (JSON, as served) per row.
CREATE TABLE key_log (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    seq BIGINT NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (namespace, seq)
);

-- One row per package name; what search shows comes from its newest release.
CREATE TABLE packages (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    short_name TEXT NOT NULL,
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    kind TEXT NOT NULL,
    description TEXT NOT NULL,
    tags TEXT NOT NULL,
    latest_version TEXT NOT NULL,
    verified BIGINT NOT NULL DEFAULT 0,
    downloads_total BIGINT NOT NULL DEFAULT 0,
    downloads_recent BIGINT NOT NULL DEFAULT 0,
    rating_sum BIGINT NOT NULL DEFAULT 0,
    rating_count BIGINT NOT NULL DEFAULT 0,
    -- Search's capped multiplier from downloads, rating and the verified flag, kept current
    -- by the writes that change them so that ranking reads one column.
    bonus DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX packages_short_name ON packages (short_name);
-- Listing without a query (the most popular first) reads this index in order.
CREATE INDEX packages_popular ON packages (bonus DESC, downloads_total DESC, name);

CREATE TABLE package_tags (
    package_id BIGINT NOT NULL REFERENCES packages(id),
    tag TEXT NOT NULL,
    PRIMARY KEY (package_id, tag)
);
CREATE INDEX package_tags_tag ON package_tags (tag);

-- Full text over name (weight A), tags (B) and description (C). The name's `/`, `-` and `_`
-- become spaces first: PostgreSQL's parser would read `acme/weather-now` as one path token.
ALTER TABLE packages ADD COLUMN document tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('simple', translate(name, '/-_', '   ')), 'A') ||
    setweight(to_tsvector('simple', translate(tags, '-_', '  ')), 'B') ||
    setweight(to_tsvector('simple', description), 'C')
) STORED;
CREATE INDEX packages_document ON packages USING GIN (document);

-- A package's releases in index order. `line` is the index line without `yanked`, which
-- lives beside it because it is the one thing that changes.
CREATE TABLE releases (
    package_id BIGINT NOT NULL REFERENCES packages(id),
    seq BIGINT NOT NULL,
    version TEXT NOT NULL,
    line TEXT NOT NULL,
    yanked BIGINT NOT NULL DEFAULT 0,
    package_sha256 TEXT NOT NULL,
    contract TEXT,
    key_id TEXT NOT NULL,
    capabilities TEXT NOT NULL,
    -- A skill's flags (skill_risk), JSON; `[]` for none or for other kinds.
    flags TEXT NOT NULL DEFAULT '[]',
    size BIGINT NOT NULL,
    published_ms BIGINT NOT NULL,
    PRIMARY KEY (package_id, seq),
    UNIQUE (package_id, version)
);
CREATE INDEX releases_digest ON releases (package_sha256);

CREATE TABLE ratings (
    package_id BIGINT NOT NULL REFERENCES packages(id),
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    stars BIGINT NOT NULL CHECK (stars BETWEEN 1 AND 5),
    comment TEXT,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (package_id, account_id)
);

-- One row per package, client and day: a download counts once per client per day. `client`
-- is a hash of the address, not the address.
CREATE TABLE downloads (
    package_id BIGINT NOT NULL REFERENCES packages(id),
    day BIGINT NOT NULL,
    client TEXT NOT NULL,
    PRIMARY KEY (package_id, day, client)
);

CREATE TABLE advisories (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    versions TEXT NOT NULL,
    package_sha256 TEXT,
    reason TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- The signed advisory list and timestamp every registry process serves (several may share
-- one PostgreSQL database), and the timestamp's sequence.
CREATE TABLE registry_state (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    timestamp_seq BIGINT NOT NULL,
    advisories TEXT NOT NULL,
    timestamp TEXT NOT NULL
);
