-- A queued job this server has taken for its pool but not yet started (contract: it is
-- still queued until its attempt really starts). Cleared on start, release, and on the
-- next start of a server, since the one that reserved it is gone.
ALTER TABLE jobs ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0;
