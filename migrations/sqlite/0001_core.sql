-- Core records for the embedded SQLite backend. Every record table has the same shape:
-- identity, version (ETag), timestamps as fixed-width UTC text (so text order is time order),
-- soft deletion, folded search text, the validated data as JSON, and filter/sort columns.
-- Search runs on an FTS5 trigram index kept in step by triggers, keyed on `seq`, an
-- INTEGER PRIMARY KEY, so that VACUUM can never renumber the rows under the index.
-- Text columns sort by code point (SQLite's BINARY collation), as on PostgreSQL (COLLATE "C").

CREATE TABLE customers (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    version     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    deleted_at  TEXT,
    search_text TEXT NOT NULL,
    doc         TEXT NOT NULL CHECK (json_valid(doc)),
    name_key    TEXT NOT NULL,
    status      TEXT NOT NULL,
    assigned_to TEXT
);
CREATE INDEX customers_created ON customers (created_at, id);
CREATE INDEX customers_updated ON customers (updated_at, id);
CREATE INDEX customers_name ON customers (name_key, id);
CREATE INDEX customers_status ON customers (status);
CREATE INDEX customers_assigned ON customers (assigned_to);

-- Tags and canonical contact values (kind: tag | email | phone), for filters and for finding a
-- customer by address.
CREATE TABLE customer_keys (
    customer_id TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    PRIMARY KEY (kind, key, customer_id)
);
CREATE INDEX customer_keys_customer ON customer_keys (customer_id);

CREATE TABLE products (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    version     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    deleted_at  TEXT,
    search_text TEXT NOT NULL,
    doc         TEXT NOT NULL CHECK (json_valid(doc)),
    name_key    TEXT NOT NULL,
    sku_key     TEXT NOT NULL UNIQUE,
    category    TEXT NOT NULL,
    active      INTEGER NOT NULL,
    price       INTEGER NOT NULL
);
CREATE INDEX products_created ON products (created_at, id);
CREATE INDEX products_updated ON products (updated_at, id);
CREATE INDEX products_name ON products (name_key, id);
CREATE INDEX products_price ON products (price, id);
CREATE INDEX products_category ON products (category);

CREATE TABLE orders (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    version        INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    deleted_at     TEXT,
    search_text    TEXT NOT NULL,
    doc            TEXT NOT NULL CHECK (json_valid(doc)),
    customer_id    TEXT NOT NULL REFERENCES customers (id),
    order_number   TEXT NOT NULL UNIQUE,
    -- year × 1,000,000 + sequence: sorts ORD-2026-1000 after ORD-2026-999.
    number_key     INTEGER NOT NULL,
    status         TEXT NOT NULL,
    payment_status TEXT NOT NULL,
    total          INTEGER NOT NULL
);
CREATE INDEX orders_created ON orders (created_at, id);
CREATE INDEX orders_updated ON orders (updated_at, id);
CREATE INDEX orders_total ON orders (total, id);
CREATE INDEX orders_number ON orders (number_key, id);
CREATE INDEX orders_customer ON orders (customer_id, created_at);
CREATE INDEX orders_status ON orders (status);

-- Order numbers: one counter per year, bumped inside the order's transaction.
CREATE TABLE order_sequences (
    year       INTEGER PRIMARY KEY NOT NULL,
    last_value INTEGER NOT NULL
);

CREATE VIRTUAL TABLE customers_fts USING fts5 (search_text, content = 'customers', content_rowid = 'seq', tokenize = 'trigram');
CREATE VIRTUAL TABLE products_fts USING fts5 (search_text, content = 'products', content_rowid = 'seq', tokenize = 'trigram');
CREATE VIRTUAL TABLE orders_fts USING fts5 (search_text, content = 'orders', content_rowid = 'seq', tokenize = 'trigram');

CREATE TRIGGER customers_fts_insert AFTER INSERT ON customers BEGIN
    INSERT INTO customers_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;
CREATE TRIGGER customers_fts_delete AFTER DELETE ON customers BEGIN
    INSERT INTO customers_fts (customers_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
END;
CREATE TRIGGER customers_fts_update AFTER UPDATE OF search_text ON customers BEGIN
    INSERT INTO customers_fts (customers_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
    INSERT INTO customers_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;

CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN
    INSERT INTO products_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;
CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN
    INSERT INTO products_fts (products_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
END;
CREATE TRIGGER products_fts_update AFTER UPDATE OF search_text ON products BEGIN
    INSERT INTO products_fts (products_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
    INSERT INTO products_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;

CREATE TRIGGER orders_fts_insert AFTER INSERT ON orders BEGIN
    INSERT INTO orders_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;
CREATE TRIGGER orders_fts_delete AFTER DELETE ON orders BEGIN
    INSERT INTO orders_fts (orders_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
END;
CREATE TRIGGER orders_fts_update AFTER UPDATE OF search_text ON orders BEGIN
    INSERT INTO orders_fts (orders_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
    INSERT INTO orders_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;
