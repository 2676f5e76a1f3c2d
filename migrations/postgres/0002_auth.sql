-- Users, sessions, service credentials and the audit trail (PostgreSQL).

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    version       bigint NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    deleted_at    timestamptz,
    search_text   text NOT NULL,
    doc           jsonb NOT NULL,
    email_key     text COLLATE "C" NOT NULL UNIQUE,
    role          text NOT NULL,
    active        boolean NOT NULL,
    -- Argon2id PHC string; NULL until a password is set.
    password_hash text
);
CREATE INDEX users_created ON users (created_at, id);
CREATE INDEX users_updated ON users (updated_at, id);
CREATE INDEX users_email ON users (email_key, id);
CREATE INDEX users_search ON users USING gin (search_text gin_trgm_ops);

-- Refresh tokens, stored as SHA-256 hashes. Each login starts a family; every refresh uses one
-- token and issues the next in the family. Presenting a used token revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash text PRIMARY KEY,
    family_id  uuid NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- Service credentials (API keys) for connectors and scripts; the key is stored as a SHA-256
-- hash and shown once. Revoked = soft-deleted.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    version      bigint NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    deleted_at   timestamptz,
    search_text  text NOT NULL,
    doc          jsonb NOT NULL,
    name_key     text COLLATE "C" NOT NULL,
    key_hash     text UNIQUE
);
CREATE INDEX api_keys_created ON api_keys (created_at, id);
CREATE INDEX api_keys_updated ON api_keys (updated_at, id);
CREATE INDEX api_keys_name ON api_keys (name_key, id);
CREATE INDEX api_keys_search ON api_keys USING gin (search_text gin_trgm_ops);

-- The audit trail: written in the same transaction as the change it records, never changed.
CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor_kind  text NOT NULL,
    actor_id    uuid,
    action      text NOT NULL,
    resource    text NOT NULL,
    resource_id uuid,
    changes     jsonb NOT NULL,
    request_id  text
);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_resource ON audit_log (resource, resource_id, at);
CREATE INDEX audit_log_actor ON audit_log (actor_id, at);
CREATE FUNCTION audit_log_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are immutable';
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_immutable();

-- Secrets the server generates for itself on first start (the token signing key).
CREATE TABLE server_secrets (
    name  text PRIMARY KEY,
    value text NOT NULL
);

ALTER TABLE orders ADD COLUMN assigned_to uuid;
CREATE INDEX orders_assigned ON orders (assigned_to);
