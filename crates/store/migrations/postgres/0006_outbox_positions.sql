-- Outbox positions are numbered after commit, by one assigner at a time, instead of by an
-- identity column under a cluster-wide advisory lock (see the crate's top doc, "Outbox
-- positions on PostgreSQL"). Writers insert with a NULL position and the id of their
-- transaction; `outbox_assign()` numbers committed rows consecutively after the newest position.
ALTER TABLE outbox DROP CONSTRAINT outbox_pkey;
ALTER TABLE outbox ALTER COLUMN position DROP IDENTITY IF EXISTS;
ALTER TABLE outbox ALTER COLUMN position DROP NOT NULL;
-- Insertion order, the tie-break within one transaction, and the row's key.
ALTER TABLE outbox ADD COLUMN id BIGINT GENERATED ALWAYS AS IDENTITY;
ALTER TABLE outbox ADD PRIMARY KEY (id);
-- The writing transaction (NULL on rows written before this migration, which all have a
-- position already).
ALTER TABLE outbox ADD COLUMN txid xid8;
-- A seat change's offset on its event's seat channel, numbered by the assigner too, 1, 2, 3…
-- per event with no gap (push channels need dense offsets). NULL on other changes.
ALTER TABLE outbox ADD COLUMN seat_version BIGINT;
UPDATE outbox SET seat_version = (payload::jsonb ->> 'version')::bigint WHERE entity = 'seats';

CREATE UNIQUE INDEX outbox_by_position ON outbox (position);
-- What the assigner has left to number: small, since rows leave it within milliseconds.
CREATE INDEX outbox_unassigned ON outbox (txid, id) WHERE position IS NULL;
CREATE INDEX outbox_seat_versions ON outbox (entity_id, seat_version)
    WHERE seat_version IS NOT NULL;

-- The assigner's lock: a table no one writes, locked EXCLUSIVE by the assigner alone. A table
-- lock rather than an advisory lock because `LOCK TABLE` is not a query: taken first in a
-- REPEATABLE READ transaction, it is held before the transaction's snapshot is, so the seat
-- snapshot can number and read in one snapshot (see `postgres::changes`). Empty and never
-- written, it gives autovacuum nothing to do, so autovacuum never holds it against us.
CREATE TABLE outbox_assigner ();

-- Numbers every committed row that has no position yet, in (transaction, insertion) order,
-- after the newest position, and gives seat changes their per-event seat version (also written
-- into the payload, where followers read it), and notifies `marquee_outbox` when it numbered
-- any. Returns how many rows it numbered.
--
-- Under READ COMMITTED each statement here takes a fresh snapshot, so the UPDATE sees every
-- number an earlier assigner committed before this one got the lock: no row is numbered
-- twice, and the numbers continue without a gap. Under REPEATABLE READ (the seat snapshot)
-- the caller takes the lock before its first query, with the same effect.
CREATE FUNCTION outbox_assign() RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    assigned BIGINT;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM outbox WHERE position IS NULL) THEN
        RETURN 0;
    END IF;
    LOCK TABLE outbox_assigner IN EXCLUSIVE MODE;
    WITH head AS (
        SELECT COALESCE(MAX(position), 0) AS position FROM outbox
    ),
    pending AS (
        SELECT o.id,
               head.position + row_number() OVER (ORDER BY o.txid, o.id) AS position,
               CASE WHEN o.entity = 'seats' THEN
                   COALESCE((SELECT MAX(s.seat_version) FROM outbox s
                             WHERE s.entity_id = o.entity_id AND s.seat_version IS NOT NULL), 0)
                   + row_number() OVER (PARTITION BY o.entity, o.entity_id ORDER BY o.txid, o.id)
               END AS seat_version
        FROM outbox o, head
        WHERE o.position IS NULL
    ),
    numbered AS (
        UPDATE outbox SET
            position = pending.position,
            seat_version = pending.seat_version,
            payload = CASE WHEN pending.seat_version IS NULL THEN outbox.payload
                ELSE jsonb_set(outbox.payload::jsonb, '{version}',
                               to_jsonb(pending.seat_version))::text END
        FROM pending
        WHERE outbox.id = pending.id
        RETURNING 1
    )
    SELECT COUNT(*) INTO assigned FROM numbered;
    -- Wakes the followers of every node at this commit. Sent here rather than by writers:
    -- NOTIFY takes a database-wide lock from its transaction's pre-commit to the end of its
    -- commit, which would queue every writer's commit behind every other's; assigners run one
    -- at a time anyway.
    IF assigned > 0 THEN
        PERFORM pg_notify('marquee_outbox', '');
    END IF;
    RETURN assigned;
END
$$;

-- Seat versions live on the outbox now; a counter on the event row made every seat change of
-- the cluster queue for that row.
ALTER TABLE events DROP COLUMN seat_version;
