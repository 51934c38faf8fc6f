-- A deleted account stays as a tombstone at its revision, so an older revision arriving late
-- cannot bring it back; nothing is placed on it.
ALTER TABLE accounts ADD COLUMN deleted boolean NOT NULL DEFAULT false;
