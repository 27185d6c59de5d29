-- The cluster's signing keys, by purpose (access-tokens, ticket-codes, queue-passes, playback)
-- and id (k1, k2, …). `secret` is the key's random root in hex; the key itself is derived from
-- it per `derivation` (see marquee-auth's keyring): `hkdf-sha256` for keys made by rotation or a
-- fresh cluster, `legacy-v1` for a first key bootstrapped from the root nodes used before.
-- Times are Unix milliseconds; a key signs from `active_from` and verifies until `retire_at`.
CREATE TABLE signing_keys (
    purpose TEXT NOT NULL,
    id TEXT NOT NULL,
    secret TEXT NOT NULL,
    derivation TEXT NOT NULL DEFAULT 'hkdf-sha256',
    created_at BIGINT NOT NULL,
    active_from BIGINT NOT NULL,
    retire_at BIGINT NULL,
    PRIMARY KEY (purpose, id)
);
