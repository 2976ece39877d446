-- What is installed and configured changes on one host (or in a CLI process) and must reach
-- every host before its next plugin call. Every such change bumps this counter in its own
-- transaction and stamps the instances it touched with the new value; a host compares the
-- counter with the one it loaded before each call (one primary-key read) and reloads only the
-- instances whose revision moved.
CREATE TABLE plugin_generation (
    id BIGINT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO plugin_generation (id, value) VALUES (1, 1);

ALTER TABLE plugin_instances ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
