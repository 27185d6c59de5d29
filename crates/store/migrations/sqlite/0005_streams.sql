-- Live streams, one row per event that was ever given a stream key. Only a SHA-256 of the key
-- is kept: keys are 256-bit random strings, so a fast hash is as strong as a slow one and the
-- RTMP/SRT gate can look the key up by its hash. `version` counts status changes: it is the
-- offset of the status on the event's push channel.
CREATE TABLE event_streams (
    event_id    TEXT PRIMARY KEY REFERENCES events (id),
    key_hash    TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL,
    problem     TEXT,
    version     BIGINT NOT NULL,
    key_issued_at BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Recordings of shows, as objects in blob storage.
CREATE TABLE recordings (
    id          TEXT PRIMARY KEY,
    event_id    TEXT NOT NULL REFERENCES events (id),
    object_key  TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT NOT NULL
);
CREATE INDEX recordings_by_event ON recordings (event_id, started_at);
