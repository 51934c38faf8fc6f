-- The W3C traceparent of the span that recorded the call (the launch's or action's trace): the
-- worker makes the call, and publishes its outcome, in that trace.
ALTER TABLE cloud_calls ADD COLUMN traceparent text;
