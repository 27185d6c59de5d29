-- The catalog and its outbox. Times are Unix milliseconds (BIGINT) so that one SQL dialect serves
-- SQLite and PostgreSQL alike; structured parts (seat maps, event details) are JSON text.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('fan', 'organizer', 'admin')),
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE venues (
    id         TEXT PRIMARY KEY,
    owner_id   TEXT NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL,
    address    TEXT NOT NULL,
    city       TEXT NOT NULL,
    country    TEXT NOT NULL,
    lat        DOUBLE PRECISION NOT NULL,
    lon        DOUBLE PRECISION NOT NULL,
    seat_map   TEXT NOT NULL,
    capacity   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX venues_by_owner ON venues (owner_id, id);

CREATE TABLE events (
    id         TEXT PRIMARY KEY,
    owner_id   TEXT NOT NULL REFERENCES users (id),
    venue_id   TEXT NOT NULL REFERENCES venues (id),
    status     TEXT NOT NULL CHECK (status IN ('draft', 'published', 'cancelled')),
    version    BIGINT NOT NULL,
    title      TEXT NOT NULL,
    starts_at  BIGINT NOT NULL,
    details    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX events_by_owner ON events (owner_id, id);
CREATE INDEX events_by_status ON events (status, id);

-- The change stream. Writers take an advisory transaction lock before appending, so positions
-- become visible in order and a reader never skips a position that commits later.
CREATE TABLE outbox (
    position    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity      TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);
