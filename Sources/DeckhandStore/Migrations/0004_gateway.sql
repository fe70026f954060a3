-- The gateway (issue 6): user names for `deckhand keys`, key look-up by their visible prefix, the OpenHands
-- git_provider field, and the newest-first keyset order of GET /api/conversations.

ALTER TABLE users
    -- The name `deckhand keys create --user NAME` and the single-user mode know a user by.
    ADD COLUMN name text UNIQUE;

-- A presented key is found by its prefix (not secret); its hash is then compared in constant time.
CREATE INDEX api_keys_key_prefix ON api_keys (key_prefix) WHERE revoked_at IS NULL;

ALTER TABLE conversations
    ADD COLUMN git_provider text;

-- GET /api/conversations pages a user's conversations newest first: (created_at, id) descending.
CREATE INDEX conversations_user_created ON conversations (user_id, created_at DESC, id DESC);

-- The sandbox backend a conversation asked for (`runtime` of POST /api/conversations); null: the default.
ALTER TABLE conversations
    ADD COLUMN runtime text CHECK (runtime IN ('docker', 'process', 'remote', 'modal'));
