-- Conversation workers (issue 5): what the step protocol of DESIGN §4 keeps per conversation, the model
-- endpoint a conversation may name, replayed trajectories, and the accounting of each model call.

ALTER TABLE conversations
    -- Events written so far: the next event's id. Taken with the row lock, so ids have no gap.
    ADD COLUMN event_count bigint NOT NULL DEFAULT 0,
    -- The highest step whose message the broker confirmed (a redelivered step re-publishes the next one
    -- only when this is behind).
    ADD COLUMN step_published bigint NOT NULL DEFAULT 0,
    -- A per-conversation model endpoint; null uses the worker's llm.* settings. The key is a secret: never
    -- logged, never returned by the gateway.
    ADD COLUMN llm_base_url text,
    ADD COLUMN llm_api_key text,
    -- Why the agent is in `error` (or the last failure), readable, no secret.
    ADD COLUMN last_error text,
    ADD COLUMN conversation_instructions text,
    -- replay_json: the actions to play back instead of asking a model, and how many have been played.
    ADD COLUMN replay jsonb,
    ADD COLUMN replay_position integer NOT NULL DEFAULT 0,
    -- While the agent is `loading` (waiting for its sandbox): whether `sandbox_ready` starts a step chain
    -- (a task is pending) or leaves the agent waiting for the user.
    ADD COLUMN resume_on_ready boolean NOT NULL DEFAULT false;

ALTER TABLE llm_calls
    -- The last event id the prompt included: a user message after it was not seen by this call.
    ADD COLUMN history_end bigint NOT NULL DEFAULT -1,
    ADD COLUMN model text,
    ADD COLUMN prompt_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN completion_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cost double precision NOT NULL DEFAULT 0,
    ADD COLUMN attempts integer NOT NULL DEFAULT 1,
    ADD COLUMN duration_ms double precision NOT NULL DEFAULT 0;

-- The actions of one step, found again when the step is redelivered.
CREATE INDEX events_step ON events (conversation_id, step) WHERE step IS NOT NULL;
