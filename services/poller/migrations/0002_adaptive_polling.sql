-- Adaptive polling: an account is polled at its fast interval while something on it is changing
-- (an instance in transition, or one an action was asked for), else at its idle interval.
ALTER TABLE accounts ADD COLUMN last_poll_at timestamptz;
-- When an event last asked for a prompt poll (a placement, an action): a poll that began
-- before it must not push the next poll back to the idle interval.
ALTER TABLE accounts ADD COLUMN poked_at timestamptz;
-- Until when an action on the instance is expected to show on the cloud.
ALTER TABLE instances ADD COLUMN expect_change_until timestamptz;
