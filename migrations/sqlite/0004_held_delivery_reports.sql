-- Delivery reports that name a channel message id no outbound entry has yet: a connector can
-- see "delivered" before it has published the "sent" report that gives the entry that id. They
-- are applied when an entry gets the id, and dropped after a while when none does (SQLite).

CREATE TABLE held_delivery_reports (
    ext_key     TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    received_at TEXT NOT NULL,
    PRIMARY KEY (ext_key, status)
);
CREATE INDEX held_delivery_reports_received ON held_delivery_reports (received_at);
