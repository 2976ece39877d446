-- The kelp:plugin contract version a plugin's component was built for (NULL: no component,
-- a skill of instructions only). It picks the bindings the host loads the plugin with.
-- Every plugin installed before this column existed was built for 0.1.0, the only version
-- a host served then.
ALTER TABLE plugins ADD COLUMN contract TEXT;
UPDATE plugins SET contract = '0.1.0' WHERE wasm_sha256 IS NOT NULL;
