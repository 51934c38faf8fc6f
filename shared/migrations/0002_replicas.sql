-- The service's replicas that are alive: each refreshes its row every heartbeat interval.
-- Replicas use it to share the partitions of ordered handlers (see shared/balancer.py).
CREATE TABLE replicas (
    replica    text PRIMARY KEY,
    last_seen  timestamptz NOT NULL
);
