-- The estimated cost of provider calls in progress. Every host sharing the database counts
-- these with the ledger before it starts a call, so concurrent runs cannot overspend together.
-- A row goes in the transaction that writes its call's ledger row; a host that died leaves
-- rows behind, which stop counting when they expire (and which it deletes when it restarts).
CREATE TABLE budget_reservations (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    host_id TEXT NOT NULL,
    -- Millionths of a US dollar.
    micros BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX budget_reservations_owner ON budget_reservations(owner_id, expires_at_ms);
-- The limit check sums a user's ledger for the day and the month on every provider call; with
-- the cost in the index that sum reads the index alone.
CREATE INDEX usage_ledger_owner_time_cost ON usage_ledger(owner_id, created_at_ms, cost_micros);
DROP INDEX usage_ledger_owner_time;
