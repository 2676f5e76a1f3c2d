-- The communications log, the media index, and the core's side of the bus: the transactional
-- outbox, dead letters filed for ops, and the connectors seen through their heartbeats (SQLite).

CREATE TABLE comms_log (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    version         INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    deleted_at      TEXT,
    search_text     TEXT NOT NULL,
    doc             TEXT NOT NULL CHECK (json_valid(doc)),
    customer_id     TEXT REFERENCES customers (id),
    kind            TEXT NOT NULL,
    direction       TEXT NOT NULL,
    occurred_at     TEXT NOT NULL,
    -- `<channel>:<channel message id>`: a redelivered event finds its entry here.
    ext_key         TEXT UNIQUE,
    raw_event_id    TEXT UNIQUE,
    thread_id       TEXT,
    triage          TEXT,
    delivery_status TEXT
);
CREATE INDEX comms_log_created ON comms_log (created_at, id);
CREATE INDEX comms_log_updated ON comms_log (updated_at, id);
CREATE INDEX comms_log_customer ON comms_log (customer_id, occurred_at, id);
CREATE INDEX comms_log_occurred ON comms_log (occurred_at, id);
CREATE INDEX comms_log_triage ON comms_log (triage, occurred_at, id) WHERE triage IS NOT NULL;
CREATE INDEX comms_log_thread ON comms_log (thread_id);

CREATE VIRTUAL TABLE comms_log_fts USING fts5 (search_text, content = 'comms_log', content_rowid = 'seq', tokenize = 'trigram');
CREATE TRIGGER comms_log_fts_insert AFTER INSERT ON comms_log BEGIN
    INSERT INTO comms_log_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;
CREATE TRIGGER comms_log_fts_delete AFTER DELETE ON comms_log BEGIN
    INSERT INTO comms_log_fts (comms_log_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
END;
CREATE TRIGGER comms_log_fts_update AFTER UPDATE OF search_text ON comms_log BEGIN
    INSERT INTO comms_log_fts (comms_log_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
    INSERT INTO comms_log_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;

CREATE TABLE media (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    version     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    deleted_at  TEXT,
    search_text TEXT NOT NULL,
    doc         TEXT NOT NULL CHECK (json_valid(doc)),
    customer_id TEXT REFERENCES customers (id),
    order_id    TEXT REFERENCES orders (id),
    comms_id    TEXT,
    status      TEXT NOT NULL
);
CREATE INDEX media_created ON media (created_at, id);
CREATE INDEX media_updated ON media (updated_at, id);
CREATE INDEX media_customer ON media (customer_id, created_at);
CREATE INDEX media_order ON media (order_id, created_at);

CREATE VIRTUAL TABLE media_fts USING fts5 (search_text, content = 'media', content_rowid = 'seq', tokenize = 'trigram');
CREATE TRIGGER media_fts_insert AFTER INSERT ON media BEGIN
    INSERT INTO media_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;
CREATE TRIGGER media_fts_delete AFTER DELETE ON media BEGIN
    INSERT INTO media_fts (media_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
END;
CREATE TRIGGER media_fts_update AFTER UPDATE OF search_text ON media BEGIN
    INSERT INTO media_fts (media_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
    INSERT INTO media_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;

-- Commands written in the same transaction as the change that asks for them; the relay
-- publishes them with confirms and marks them sent. A lease keeps two relays off one row.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY,
    envelope    TEXT NOT NULL CHECK (json_valid(envelope)),
    created_at  TEXT NOT NULL,
    lease_until TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    sent_at     TEXT
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;

-- Messages a consumer gave up on, filed from the bus's dead-letter queue for ops to replay or
-- discard.
CREATE TABLE dead_letters (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    consumer    TEXT NOT NULL,
    envelope_id TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    envelope    TEXT NOT NULL CHECK (json_valid(envelope)),
    reason      TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    dead_at     TEXT NOT NULL,
    status      TEXT NOT NULL,
    resolved_at TEXT,
    resolved_by TEXT,
    UNIQUE (consumer, envelope_id, dead_at)
);
CREATE INDEX dead_letters_status ON dead_letters (status, seq);

-- Connector instances as their heartbeats describe them.
CREATE TABLE connector_instances (
    name             TEXT NOT NULL,
    instance         TEXT NOT NULL,
    version          TEXT NOT NULL,
    channel          TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    last_heartbeat   TEXT NOT NULL,
    state            TEXT NOT NULL,
    detail           TEXT,
    in_flight        INTEGER NOT NULL,
    interval_seconds INTEGER NOT NULL,
    PRIMARY KEY (name, instance)
);
