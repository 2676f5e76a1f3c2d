-- The communications log, the media index, and the core's side of the bus: the transactional
-- outbox, dead letters filed for ops, and the connectors seen through their heartbeats
-- (PostgreSQL).

CREATE TABLE comms_log (
    id              uuid PRIMARY KEY,
    version         bigint NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz,
    search_text     text NOT NULL,
    doc             jsonb NOT NULL,
    customer_id     uuid REFERENCES customers (id),
    kind            text NOT NULL,
    direction       text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    -- `<channel>:<channel message id>`: a redelivered event finds its entry here.
    ext_key         text COLLATE "C" UNIQUE,
    raw_event_id    text COLLATE "C" UNIQUE,
    thread_id       uuid,
    triage          text,
    delivery_status text
);
CREATE INDEX comms_log_created ON comms_log (created_at, id);
CREATE INDEX comms_log_updated ON comms_log (updated_at, id);
CREATE INDEX comms_log_customer ON comms_log (customer_id, occurred_at, id);
CREATE INDEX comms_log_occurred ON comms_log (occurred_at, id);
CREATE INDEX comms_log_triage ON comms_log (triage, occurred_at, id) WHERE triage IS NOT NULL;
CREATE INDEX comms_log_thread ON comms_log (thread_id);
CREATE INDEX comms_log_search ON comms_log USING gin (search_text gin_trgm_ops);

CREATE TABLE media (
    id          uuid PRIMARY KEY,
    version     bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz,
    search_text text NOT NULL,
    doc         jsonb NOT NULL,
    customer_id uuid REFERENCES customers (id),
    order_id    uuid REFERENCES orders (id),
    comms_id    uuid,
    status      text NOT NULL
);
CREATE INDEX media_created ON media (created_at, id);
CREATE INDEX media_updated ON media (updated_at, id);
CREATE INDEX media_customer ON media (customer_id, created_at);
CREATE INDEX media_order ON media (order_id, created_at);
CREATE INDEX media_search ON media USING gin (search_text gin_trgm_ops);

-- Commands written in the same transaction as the change that asks for them; the relay
-- publishes them with confirms and marks them sent. A lease keeps two relays off one row.
CREATE TABLE outbox (
    seq         bigserial PRIMARY KEY,
    envelope    jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    lease_until timestamptz,
    attempts    bigint NOT NULL DEFAULT 0,
    last_error  text,
    sent_at     timestamptz
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;

-- Messages a consumer gave up on, filed from the bus's dead-letter queue for ops to replay or
-- discard.
CREATE TABLE dead_letters (
    seq         bigserial PRIMARY KEY,
    id          uuid NOT NULL UNIQUE,
    consumer    text NOT NULL,
    envelope_id text NOT NULL,
    event_type  text NOT NULL,
    routing_key text NOT NULL,
    envelope    jsonb NOT NULL,
    reason      text NOT NULL,
    attempts    bigint NOT NULL,
    dead_at     timestamptz NOT NULL,
    status      text NOT NULL,
    resolved_at timestamptz,
    resolved_by text,
    UNIQUE (consumer, envelope_id, dead_at)
);
CREATE INDEX dead_letters_status ON dead_letters (status, seq);

-- Connector instances as their heartbeats describe them.
CREATE TABLE connector_instances (
    name             text NOT NULL,
    instance         text NOT NULL,
    version          text NOT NULL,
    channel          text NOT NULL,
    started_at       timestamptz NOT NULL,
    last_heartbeat   timestamptz NOT NULL,
    state            text NOT NULL,
    detail           text,
    in_flight        bigint NOT NULL,
    interval_seconds bigint NOT NULL,
    PRIMARY KEY (name, instance)
);
