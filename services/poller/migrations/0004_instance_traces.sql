-- The W3C traceparent of the last request about a followed instance: its placement's, then
-- each action's. The state changes a poll sees for the instance continue that trace.
ALTER TABLE instances ADD COLUMN traceparent text;
