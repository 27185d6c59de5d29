-- Each event's seat changes are numbered 1, 2, 3… in the transaction that makes them. The number
-- is the offset of the change on the event's push channel and the `version` of its seat snapshot,
-- so a client can load the snapshot and follow the channel from its version without a gap.
ALTER TABLE events ADD COLUMN seat_version BIGINT NOT NULL DEFAULT 0;
