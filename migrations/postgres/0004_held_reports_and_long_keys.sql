-- Delivery reports held until an entry has their channel message id, and an index of the log's
-- long channel keys (PostgreSQL).
--
-- A connector can see "delivered" before it has published the "sent" report that gives the
-- entry that id. Such reports are applied when an entry gets the id, and dropped after a while
-- when none does.

CREATE TABLE held_delivery_reports (
    ext_key     text COLLATE "C" NOT NULL,
    status      text NOT NULL,
    reason      text,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (ext_key, status)
);
CREATE INDEX held_delivery_reports_received ON held_delivery_reports (received_at);

-- Keys over 512 bytes: a channel message id that long is now keyed by its hash, and the store
-- re-keys entries logged before (`rekey_long_channel_ids`, which finds them through this index).
CREATE INDEX comms_log_long_ext_key ON comms_log (id) WHERE octet_length(ext_key) > 512;
