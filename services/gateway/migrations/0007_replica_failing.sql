-- Background loops each replica reported down in its newest heartbeat.
ALTER TABLE service_replicas ADD COLUMN failing text[] NOT NULL DEFAULT '{}';
