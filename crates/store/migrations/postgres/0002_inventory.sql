-- Seat holds, orders and tickets. The database is the last guard against selling a seat twice:
-- one valid ticket per (event, seat), general-admission sales within capacity, and per-seat fences
-- that refuse a write from a hold whose lease was granted to someone newer.
CREATE TABLE holds (
    id            TEXT PRIMARY KEY,
    event_id      TEXT NOT NULL REFERENCES events (id),
    user_id       TEXT NOT NULL REFERENCES users (id),
    seat_ids      TEXT NOT NULL,
    ga_section    TEXT,
    ga_quantity   BIGINT NOT NULL DEFAULT 0,
    fencing_token BIGINT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'released', 'lapsed', 'ordered')),
    extended      BIGINT NOT NULL DEFAULT 0,
    expires_at    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX holds_by_event ON holds (event_id, status);
CREATE INDEX holds_by_user ON holds (user_id, event_id, status);
CREATE INDEX holds_by_expiry ON holds (status, expires_at);

-- The largest fencing token that has held each seat.
CREATE TABLE seat_fences (
    event_id TEXT NOT NULL,
    seat_id  TEXT NOT NULL,
    token    BIGINT NOT NULL,
    PRIMARY KEY (event_id, seat_id)
);

CREATE TABLE general_admission (
    event_id TEXT NOT NULL REFERENCES events (id),
    section  TEXT NOT NULL,
    capacity BIGINT NOT NULL,
    held     BIGINT NOT NULL DEFAULT 0,
    sold     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, section),
    CHECK (held >= 0 AND sold >= 0 AND held + sold <= capacity)
);

CREATE TABLE orders (
    id                TEXT PRIMARY KEY,
    event_id          TEXT NOT NULL REFERENCES events (id),
    user_id           TEXT NOT NULL REFERENCES users (id),
    hold_id           TEXT NOT NULL UNIQUE REFERENCES holds (id),
    status            TEXT NOT NULL CHECK (status IN ('confirmed', 'refunded')),
    total_cents       BIGINT NOT NULL,
    currency          TEXT NOT NULL,
    payment_reference TEXT NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, id);
CREATE INDEX orders_by_event ON orders (event_id, id);

CREATE TABLE tickets (
    id            TEXT PRIMARY KEY,
    order_id      TEXT NOT NULL REFERENCES orders (id),
    event_id      TEXT NOT NULL REFERENCES events (id),
    seat_id       TEXT,
    section       TEXT NOT NULL,
    row_label     TEXT,
    number        BIGINT,
    price_cents   BIGINT NOT NULL,
    code          TEXT NOT NULL UNIQUE,
    valid         BIGINT NOT NULL DEFAULT 1,
    checked_in_at BIGINT
);
CREATE INDEX tickets_by_order ON tickets (order_id);
CREATE UNIQUE INDEX tickets_one_valid_per_seat ON tickets (event_id, seat_id)
    WHERE seat_id IS NOT NULL AND valid = 1;

-- An order's history, append-only: its state is derived from these records.
CREATE TABLE order_events (
    order_id    TEXT NOT NULL REFERENCES orders (id),
    sequence    BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, sequence)
);

CREATE TABLE idempotency_keys (
    user_id      TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code  BIGINT NOT NULL,
    response     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);

CREATE INDEX outbox_by_entity ON outbox (entity, entity_id, position);
