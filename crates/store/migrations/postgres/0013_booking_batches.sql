-- The booking hot path in one round trip and one commit per batch (see `postgres::batch`).
--
-- Each node gathers the holds, hold ends, orders and idempotent answers its requests ask for
-- while earlier batches are in flight, and sends them as one JSON array to
-- `marquee_booking_batch`, called once in a transaction of its own: the whole batch is one
-- transaction, so PostgreSQL parses, plans, logs and flushes once per batch instead of once per
-- statement of every fan. Each operation runs in a subtransaction of its
-- own (the EXCEPTION block), so a refused operation (seats already sold, hold expired) undoes
-- only itself and is answered as such, and the rest of the batch commits.
--
-- Refusals the caller branches on are raised as `RAISE EXCEPTION '<code>'` (SQLSTATE P0001)
-- with the code in the message and its data in the detail; the batch answers every failure,
-- refusal or not, by its SQLSTATE, message, detail and constraint. A batch holds at most 32
-- operations (the node enforces it): a transaction with more than 64 subtransactions that
-- wrote overflows PostgreSQL's per-backend cache of them, which slows every other session's
-- snapshots.

-- Holds, orders and sales of standing places move the section's counters within its capacity.
CREATE FUNCTION marquee_change_general_admission(
    ga_event TEXT, ga_section TEXT, held_delta BIGINT, sold_delta BIGINT
) RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    UPDATE general_admission SET held = held + held_delta, sold = sold + sold_delta
    WHERE event_id = ga_event AND section = ga_section
      AND held + held_delta >= 0 AND sold + sold_delta >= 0
      AND held + held_delta + sold + sold_delta <= capacity;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'capacity_exceeded' USING DETAIL = ga_section;
    END IF;
END $$;

-- Appends a seat change of an event that must exist; its position and seat version are
-- numbered after commit by `outbox_assign()` (migration 0006).
CREATE FUNCTION marquee_announce_seats(change_event TEXT, change JSONB) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (entity, entity_id, kind, payload, recorded_at, txid)
    SELECT 'seats', change_event, change ->> 'kind', change ->> 'payload',
           (change ->> 'recorded_at')::BIGINT, pg_current_xact_id()
    WHERE EXISTS (SELECT 1 FROM events WHERE id = change_event);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not_found';
    END IF;
END $$;

-- A new hold: refused if any of its seats is sold; raises each seat's fence to the hold's
-- lease token (never lowers it); takes standing places within the section's capacity.
CREATE FUNCTION marquee_create_hold(op JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    hold JSONB := op -> 'hold';
    hold_event TEXT := hold ->> 'event_id';
    hold_seats TEXT[] := ARRAY(SELECT jsonb_array_elements_text(hold -> 'seat_ids'));
    hold_token BIGINT := (hold ->> 'fencing_token')::BIGINT;
    sold TEXT[];
BEGIN
    IF cardinality(hold_seats) > 0 THEN
        SELECT array_agg(seat_id) INTO sold FROM tickets
        WHERE event_id = hold_event AND valid = 1 AND seat_id = ANY (hold_seats);
        IF sold IS NOT NULL THEN
            RAISE EXCEPTION 'seats_sold' USING DETAIL = array_to_json(sold)::TEXT;
        END IF;
        INSERT INTO seat_fences (event_id, seat_id, token)
        SELECT hold_event, seat, hold_token FROM unnest(hold_seats) AS seat
        ON CONFLICT (event_id, seat_id) DO UPDATE SET token = excluded.token
        WHERE seat_fences.token < excluded.token;
    END IF;
    IF hold ->> 'ga_section' IS NOT NULL AND op ->> 'ga_capacity' IS NOT NULL THEN
        INSERT INTO general_admission (event_id, section, capacity)
        VALUES (hold_event, hold ->> 'ga_section', (op ->> 'ga_capacity')::BIGINT)
        ON CONFLICT (event_id, section) DO NOTHING;
        PERFORM marquee_change_general_admission(
            hold_event, hold ->> 'ga_section', (hold ->> 'ga_quantity')::BIGINT, 0);
    END IF;
    INSERT INTO holds (id, event_id, user_id, seat_ids, ga_section, ga_quantity, fencing_token,
                       status, extended, expires_at, created_at)
    VALUES (hold ->> 'id', hold_event, hold ->> 'user_id', hold ->> 'seat_ids_json',
            hold ->> 'ga_section', (hold ->> 'ga_quantity')::BIGINT, hold_token,
            hold ->> 'status', (hold ->> 'extended')::BIGINT, (hold ->> 'expires_at')::BIGINT,
            (hold ->> 'created_at')::BIGINT);
    PERFORM marquee_announce_seats(hold_event, op -> 'change');
    RETURN '{}'::JSONB;
END $$;

-- Ends an active hold (released or lapsed) and gives its standing places back; answers
-- whether it was still active.
CREATE FUNCTION marquee_end_hold(op JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
BEGIN
    UPDATE holds SET status = op ->> 'status' WHERE id = op ->> 'id' AND status = 'active';
    IF NOT FOUND THEN
        RETURN '{"ended": false}'::JSONB;
    END IF;
    IF op ->> 'ga_section' IS NOT NULL THEN
        PERFORM marquee_change_general_admission(
            op ->> 'event_id', op ->> 'ga_section', -(op ->> 'ga_quantity')::BIGINT, 0);
    END IF;
    PERFORM marquee_announce_seats(op ->> 'event_id', op -> 'change');
    RETURN '{"ended": true}'::JSONB;
END $$;

-- Turns an active hold into an order, only while the event is on sale and the hold's token is
-- still every seat's fence; the unique index on valid tickets per seat is the last word.
CREATE FUNCTION marquee_confirm_order(op JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    purchase JSONB := op -> 'order';
    order_event TEXT := purchase ->> 'event_id';
    hold_seats TEXT[] := ARRAY(SELECT jsonb_array_elements_text(op -> 'seat_ids'));
    hold_token BIGINT := (op ->> 'fencing_token')::BIGINT;
    created BIGINT := (purchase ->> 'created_at')::BIGINT;
    fenced BIGINT;
BEGIN
    -- The share lock keeps a cancellation from committing until this order has (so its
    -- refunds find it), and waits for one in flight; sales do not wait for each other on it.
    UPDATE holds SET status = 'ordered'
    WHERE id = purchase ->> 'hold_id' AND status = 'active' AND fencing_token = hold_token
      AND expires_at > created
      AND EXISTS (SELECT 1 FROM events WHERE events.id = holds.event_id
                  AND events.status = 'published' FOR SHARE);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold_not_active';
    END IF;
    IF cardinality(hold_seats) > 0 THEN
        SELECT COUNT(*) INTO fenced FROM seat_fences
        WHERE event_id = order_event AND token = hold_token AND seat_id = ANY (hold_seats);
        IF fenced <> cardinality(hold_seats) THEN
            RAISE EXCEPTION 'fenced';
        END IF;
    END IF;
    IF op ->> 'ga_section' IS NOT NULL THEN
        PERFORM marquee_change_general_admission(
            order_event, op ->> 'ga_section', -(op ->> 'ga_quantity')::BIGINT,
            (op ->> 'ga_quantity')::BIGINT);
    END IF;
    INSERT INTO orders (id, event_id, user_id, hold_id, status, total_cents, currency,
                        payment_reference, created_at)
    VALUES (purchase ->> 'id', order_event, purchase ->> 'user_id', purchase ->> 'hold_id',
            purchase ->> 'status', (purchase ->> 'total_cents')::BIGINT,
            purchase ->> 'currency', purchase ->> 'payment_reference', created);
    INSERT INTO tickets (id, order_id, event_id, seat_id, section, row_label, number,
                         price_cents, code)
    SELECT ticket.id, purchase ->> 'id', order_event, ticket.seat_id, ticket.section,
           ticket.row_label, ticket.number, ticket.price_cents, ticket.code
    FROM jsonb_to_recordset(op -> 'tickets') AS ticket (
        id TEXT, seat_id TEXT, section TEXT, row_label TEXT, number BIGINT,
        price_cents BIGINT, code TEXT);
    INSERT INTO order_events (order_id, sequence, kind, data, recorded_at)
    VALUES (purchase ->> 'id', 1, 'created', op ->> 'created_record', created),
           (purchase ->> 'id', 2, 'paid', op ->> 'paid_record', created);
    PERFORM marquee_announce_seats(order_event, op -> 'change');
    RETURN '{}'::JSONB;
END $$;

-- Keeps a request's answer for its retries; answers whether this call stored it (a
-- concurrent retry may have stored its own first).
CREATE FUNCTION marquee_save_response(op JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response, created_at)
    VALUES (op ->> 'user_id', op ->> 'key', op ->> 'request_hash',
            (op ->> 'status_code')::BIGINT, op ->> 'response', (op ->> 'created_at')::BIGINT)
    ON CONFLICT (user_id, key) DO NOTHING;
    RETURN jsonb_build_object('saved', FOUND);
END $$;

-- Runs a batch of operations, each in its own subtransaction; answers one result per
-- operation, in order: the operation's own answer, or `{"sqlstate", "message", "detail",
-- "constraint"}` when it failed (and was undone).
CREATE FUNCTION marquee_booking_batch(ops JSONB) RETURNS JSONB LANGUAGE plpgsql AS $$
DECLARE
    op JSONB;
    answer JSONB;
    answers JSONB := '[]'::JSONB;
    failed_state TEXT;
    failed_message TEXT;
    failed_detail TEXT;
    failed_constraint TEXT;
BEGIN
    FOR op IN SELECT value FROM jsonb_array_elements(ops) LOOP
        BEGIN
            answer := CASE op ->> 'op'
                WHEN 'create_hold' THEN marquee_create_hold(op)
                WHEN 'end_hold' THEN marquee_end_hold(op)
                WHEN 'confirm_order' THEN marquee_confirm_order(op)
                WHEN 'save_response' THEN marquee_save_response(op)
            END;
            IF answer IS NULL THEN
                RAISE EXCEPTION 'unknown_operation' USING DETAIL = COALESCE(op ->> 'op', '');
            END IF;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS
                failed_state = RETURNED_SQLSTATE,
                failed_message = MESSAGE_TEXT,
                failed_detail = PG_EXCEPTION_DETAIL,
                failed_constraint = CONSTRAINT_NAME;
            answer := jsonb_build_object(
                'sqlstate', failed_state, 'message', failed_message,
                'detail', failed_detail, 'constraint', failed_constraint);
        END;
        answers := answers || jsonb_build_array(answer);
    END LOOP;
    RETURN answers;
END $$;
