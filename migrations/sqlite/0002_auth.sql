-- Users, sessions, service credentials and the audit trail (SQLite).

CREATE TABLE users (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    version       INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    deleted_at    TEXT,
    search_text   TEXT NOT NULL,
    doc           TEXT NOT NULL CHECK (json_valid(doc)),
    email_key     TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    active        INTEGER NOT NULL,
    -- Argon2id PHC string; NULL until a password is set.
    password_hash TEXT
);
CREATE INDEX users_created ON users (created_at, id);
CREATE INDEX users_updated ON users (updated_at, id);
CREATE INDEX users_email ON users (email_key, id);

-- Refresh tokens, stored as SHA-256 hashes. Each login starts a family; every refresh uses one
-- token and issues the next in the family. Presenting a used token revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    family_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT,
    revoked_at TEXT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- Service credentials (API keys) for connectors and scripts; the key is stored as a SHA-256
-- hash and shown once. Revoked = soft-deleted.
CREATE TABLE api_keys (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    version      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    deleted_at   TEXT,
    search_text  TEXT NOT NULL,
    doc          TEXT NOT NULL CHECK (json_valid(doc)),
    name_key     TEXT NOT NULL,
    key_hash     TEXT UNIQUE
);
CREATE INDEX api_keys_created ON api_keys (created_at, id);
CREATE INDEX api_keys_updated ON api_keys (updated_at, id);
CREATE INDEX api_keys_name ON api_keys (name_key, id);

-- The audit trail: written in the same transaction as the change it records, never changed.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    at          TEXT NOT NULL,
    actor_kind  TEXT NOT NULL,
    actor_id    TEXT,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    resource_id TEXT,
    changes     TEXT NOT NULL CHECK (json_valid(changes)),
    request_id  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_resource ON audit_log (resource, resource_id, at);
CREATE INDEX audit_log_actor ON audit_log (actor_id, at);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable');
END;

-- Secrets the server generates for itself on first start (the token signing key).
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

ALTER TABLE orders ADD COLUMN assigned_to TEXT;
CREATE INDEX orders_assigned ON orders (assigned_to);

-- Searching users by name and e-mail.
CREATE VIRTUAL TABLE users_fts USING fts5 (search_text, content = 'users', content_rowid = 'seq', tokenize = 'trigram');
CREATE TRIGGER users_fts_insert AFTER INSERT ON users BEGIN
    INSERT INTO users_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;
CREATE TRIGGER users_fts_delete AFTER DELETE ON users BEGIN
    INSERT INTO users_fts (users_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
END;
CREATE TRIGGER users_fts_update AFTER UPDATE OF search_text ON users BEGIN
    INSERT INTO users_fts (users_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
    INSERT INTO users_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;
CREATE VIRTUAL TABLE api_keys_fts USING fts5 (search_text, content = 'api_keys', content_rowid = 'seq', tokenize = 'trigram');
CREATE TRIGGER api_keys_fts_insert AFTER INSERT ON api_keys BEGIN
    INSERT INTO api_keys_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;
CREATE TRIGGER api_keys_fts_delete AFTER DELETE ON api_keys BEGIN
    INSERT INTO api_keys_fts (api_keys_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
END;
CREATE TRIGGER api_keys_fts_update AFTER UPDATE OF search_text ON api_keys BEGIN
    INSERT INTO api_keys_fts (api_keys_fts, rowid, search_text) VALUES ('delete', old.seq, old.search_text);
    INSERT INTO api_keys_fts (rowid, search_text) VALUES (new.seq, new.search_text);
END;
