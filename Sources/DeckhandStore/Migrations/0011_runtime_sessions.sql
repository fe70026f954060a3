-- Sessions of `deckhand runtime-api` (issue 16). OpenHands' Remote Runtime API names a runtime by its caller's
-- session id; each session gets a runtime id of its own, which the runtime workers take as the owner of the
-- session's sandbox (`sandboxes.conversation_id`), so a session has at most one live sandbox, woken, taken over
-- and reconciled like a conversation's. Sessions are per user: two users' equal session ids are two sessions.
CREATE TABLE runtime_sessions (
    runtime_id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id text NOT NULL,
    -- The image the caller asked for, as asked (what ran is the sandbox's `image`).
    image text NOT NULL,
    resource_factor integer NOT NULL DEFAULT 1 CHECK (resource_factor > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, session_id)
);
