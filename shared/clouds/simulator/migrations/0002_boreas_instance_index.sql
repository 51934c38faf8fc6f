-- Boreas looks up the node of one of its instances by this tag (GET /v1/nodes?tag=...): an
-- index lookup instead of a scan of every node of the account.
CREATE INDEX nodes_boreas_instance ON nodes (api_key, (tags->>'boreas-instance'));
