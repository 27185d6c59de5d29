-- Organizers' webhook endpoints. The secret is kept as given out: signing needs it in the clear.
-- `events` is a JSON array of the event types the endpoint receives.
CREATE TABLE webhooks (
    id           TEXT PRIMARY KEY,
    organizer_id TEXT NOT NULL REFERENCES users (id),
    url          TEXT NOT NULL,
    events       TEXT NOT NULL,
    secret       TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL
);
CREATE INDEX webhooks_by_organizer ON webhooks (organizer_id, id);
