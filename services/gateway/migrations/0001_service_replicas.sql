-- What the gateway has heard from each service replica, fed by service.heartbeat events.
CREATE TABLE service_replicas (
    service     text NOT NULL,
    replica     text NOT NULL,
    started_at  timestamptz NOT NULL,
    sent_at     timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    PRIMARY KEY (service, replica)
);
