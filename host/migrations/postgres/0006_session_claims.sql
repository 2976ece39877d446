-- The run in progress on a session, claimed in the database so that one run per session holds
-- across every host sharing it: the run's id, the host that runs it, and a lease that host
-- renews while the run lives. A host that dies leaves its claim behind; once the lease has
-- passed, the next message may take the session over (and the host clears its own claims when
-- it starts again). `run_abort` asks the claiming host to stop the run: set by an abort or a
-- delete that reached another host.
ALTER TABLE chat_sessions ADD COLUMN run_id TEXT;
ALTER TABLE chat_sessions ADD COLUMN run_host TEXT;
ALTER TABLE chat_sessions ADD COLUMN run_lease_until BIGINT;
ALTER TABLE chat_sessions ADD COLUMN run_abort BIGINT NOT NULL DEFAULT 0;
-- The per-user limit on concurrent runs counts a user's claimed sessions.
CREATE INDEX chat_sessions_running ON chat_sessions(owner_id) WHERE run_id IS NOT NULL;
-- A call whose stream ended without reporting usage (aborted, broken) is settled at its
-- estimated cost; such rows say so.
ALTER TABLE usage_ledger ADD COLUMN estimated BIGINT NOT NULL DEFAULT 0;
