-- Public events as the gateway received them, numbered, for GET /v1/events (resumable SSE).
CREATE TABLE event_feed (
    seq          bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    owner        text,
    topic        text NOT NULL,
    envelope     jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_feed_owner ON event_feed (owner, seq);
