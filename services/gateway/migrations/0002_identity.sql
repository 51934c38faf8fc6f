-- People who log in to Boreas, and the bearer tokens they hold.
CREATE TABLE users (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username       text NOT NULL UNIQUE,
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('admin', 'user')),
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 digest of each token is kept; the token itself is shown once.
CREATE TABLE tokens (
    digest      bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX tokens_expires_at ON tokens (expires_at);

-- Fixed one-minute windows of token requests, per username and per client address.
CREATE TABLE rate_limits (
    bucket        text PRIMARY KEY,
    window_start  timestamptz NOT NULL,
    hits          integer NOT NULL
);
