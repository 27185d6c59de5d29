-- Secrets every node of a cluster must agree on (the signing root of access tokens, ticket
-- codes, passes and playback URLs), kept where every node already looks: the first node to
-- start writes one, the others read it. Hex text, so both engines store it alike.
CREATE TABLE node_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
