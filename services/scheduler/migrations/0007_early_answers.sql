-- An approval answer (instance.approved / instance.denied) seen before the deployment.admitted
-- that makes its instance a member (the two travel on different queues): kept until the
-- admission applies it, and pruned after a day if no deployment ever claims it (an answer to
-- a launch of its own).
CREATE TABLE early_answers (
    instance_id  uuid PRIMARY KEY,
    approved     boolean NOT NULL,
    denial       text,  -- "denied by <who>: <reason>" when not approved
    seen_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX early_answers_seen ON early_answers (seen_at);
