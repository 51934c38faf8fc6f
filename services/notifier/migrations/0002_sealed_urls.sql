-- webhook.changed 2.0 carries the URL sealed (its query may hold a token) and `url` redacted.
-- Rows kept from 1.0 events have no sealed URL: their `url` is the whole one, until the gateway
-- announces the webhook again.
ALTER TABLE webhooks ADD COLUMN sealed_url jsonb;
