-- Kept responses expire after the node's retention (24 h by default): the sweep deletes the
-- oldest first, so it reads them in age order.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
