-- Idempotency keys (PostgreSQL): a request that creates a record and asks a connector to act
-- (sending a message) may carry an `Idempotency-Key`; the key is stored in the transaction that
-- creates the record, so a retry of the request with the same key gets that record back instead
-- of a second record and a second command. Keys belong to their caller and are kept.

CREATE TABLE idempotency_keys (
    actor      TEXT NOT NULL,        -- who sent the request: `user:<id>`, `api_key:<id>`
    key        TEXT NOT NULL,        -- the client's key
    request    TEXT NOT NULL,        -- digest of the request (route and body): a key is for one request
    record_id  UUID NOT NULL,        -- what the first request created
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (actor, key)
);
