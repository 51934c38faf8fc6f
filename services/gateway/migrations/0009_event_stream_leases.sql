-- Open GET /v1/events streams, for the per-user cap (BOREAS_EVENT_STREAMS_PER_USER) across all
-- gateway processes. Each process's event hub renews the leases of its own streams in one
-- statement; a stream's row goes when it closes, and those of a process that died expire.
CREATE TABLE event_stream_leases (
    stream_id   uuid PRIMARY KEY,
    owner       text NOT NULL,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX event_stream_leases_owner ON event_stream_leases (owner);
