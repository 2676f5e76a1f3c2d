-- Core records for the PostgreSQL backend. Every record table has the same shape: identity,
-- version (ETag), timestamps, soft deletion, folded search text, the validated data as JSONB,
-- and filter/sort columns. Search runs on pg_trgm GIN indexes, which answer LIKE '%term%'.
-- Sort keys use COLLATE "C" (code point order), so listings sort the same whatever the
-- database's locale, and the same as on SQLite.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE customers (
    id          uuid PRIMARY KEY,
    version     bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz,
    search_text text NOT NULL,
    doc         jsonb NOT NULL,
    name_key    text COLLATE "C" NOT NULL,
    status      text NOT NULL,
    assigned_to uuid
);
CREATE INDEX customers_created ON customers (created_at, id);
CREATE INDEX customers_updated ON customers (updated_at, id);
CREATE INDEX customers_name ON customers (name_key, id);
CREATE INDEX customers_status ON customers (status);
CREATE INDEX customers_assigned ON customers (assigned_to);
CREATE INDEX customers_search ON customers USING gin (search_text gin_trgm_ops);
-- A finer histogram of the search text: the planner estimates how many rows LIKE '%term%'
-- matches from it, and with the default (100 entries) a term found in one entry is taken for
-- 1% of the table, so a rare term may walk the sort index over every row instead of using
-- the trigram index.
ALTER TABLE customers ALTER COLUMN search_text SET STATISTICS 1000;

-- Tags and canonical contact values (kind: tag | email | phone), for filters and for finding a
-- customer by address.
CREATE TABLE customer_keys (
    customer_id uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    key         text NOT NULL,
    PRIMARY KEY (kind, key, customer_id)
);
CREATE INDEX customer_keys_customer ON customer_keys (customer_id);

CREATE TABLE products (
    id          uuid PRIMARY KEY,
    version     bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz,
    search_text text NOT NULL,
    doc         jsonb NOT NULL,
    name_key    text COLLATE "C" NOT NULL,
    sku_key     text COLLATE "C" NOT NULL UNIQUE,
    category    text NOT NULL,
    active      boolean NOT NULL,
    price       bigint NOT NULL
);
CREATE INDEX products_created ON products (created_at, id);
CREATE INDEX products_updated ON products (updated_at, id);
CREATE INDEX products_name ON products (name_key, id);
CREATE INDEX products_price ON products (price, id);
CREATE INDEX products_category ON products (category);
CREATE INDEX products_search ON products USING gin (search_text gin_trgm_ops);
ALTER TABLE products ALTER COLUMN search_text SET STATISTICS 1000;

CREATE TABLE orders (
    id             uuid PRIMARY KEY,
    version        bigint NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    deleted_at     timestamptz,
    search_text    text NOT NULL,
    doc            jsonb NOT NULL,
    customer_id    uuid NOT NULL REFERENCES customers (id),
    order_number   text COLLATE "C" NOT NULL UNIQUE,
    -- year × 1,000,000 + sequence: sorts ORD-2026-1000 after ORD-2026-999.
    number_key     bigint NOT NULL,
    status         text NOT NULL,
    payment_status text NOT NULL,
    total          bigint NOT NULL
);
CREATE INDEX orders_created ON orders (created_at, id);
CREATE INDEX orders_updated ON orders (updated_at, id);
CREATE INDEX orders_total ON orders (total, id);
CREATE INDEX orders_number ON orders (number_key, id);
CREATE INDEX orders_customer ON orders (customer_id, created_at);
CREATE INDEX orders_status ON orders (status);
CREATE INDEX orders_search ON orders USING gin (search_text gin_trgm_ops);
ALTER TABLE orders ALTER COLUMN search_text SET STATISTICS 1000;

-- Order numbers: one counter per year, bumped inside the order's transaction.
CREATE TABLE order_sequences (
    year       integer PRIMARY KEY,
    last_value bigint NOT NULL
);
