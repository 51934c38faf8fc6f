-- Accounts of the simulated cloud: who may call it, and how it behaves for them.
CREATE TABLE accounts (
    api_key      text PRIMARY KEY,
    secret_hash  text NOT NULL,
    settings     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Nodes: the state each entered and when; the current state is computed from the timings.
CREATE TABLE nodes (
    id          text PRIMARY KEY,
    api_key     text NOT NULL REFERENCES accounts (api_key) ON DELETE CASCADE,
    name        text NOT NULL,
    size_id     text NOT NULL,
    image_id    text NOT NULL,
    region      text NOT NULL,
    tags        jsonb NOT NULL DEFAULT '{}',
    state       text NOT NULL,
    since       timestamptz NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX nodes_account ON nodes (api_key, created_at);
