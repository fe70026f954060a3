-- Deckhand's initial schema (DESIGN §3). Table names are unqualified: the connection's search_path decides.

CREATE TABLE users (
    id uuid PRIMARY KEY,
    email text UNIQUE,
    display_name text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL DEFAULT '',
    -- SHA-256 of the key; the key itself is shown once and never stored.
    key_hash bytea NOT NULL UNIQUE,
    -- A short visible prefix of the key, to tell keys apart in listings.
    key_prefix text NOT NULL DEFAULT '',
    scopes text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);

CREATE INDEX api_keys_user_id ON api_keys (user_id);

CREATE TABLE sandboxes (
    id uuid PRIMARY KEY,
    backend text NOT NULL CHECK (backend IN ('docker', 'remote', 'modal', 'process')),
    -- Container id, runtime id or Modal sandbox id, once the backend has one.
    backend_ref text,
    image text NOT NULL,
    status text NOT NULL CHECK (status IN ('warm', 'starting', 'running', 'paused', 'stopped', 'error', 'lost')),
    url text,
    session_api_key text,
    -- Null while the sandbox is warm (unclaimed).
    conversation_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_active_at timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX sandboxes_conversation_id ON sandboxes (conversation_id) WHERE conversation_id IS NOT NULL;
CREATE INDEX sandboxes_warm ON sandboxes (backend, image, created_at) WHERE status = 'warm';

CREATE TABLE conversations (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'STARTING'
        CHECK (status IN ('STARTING', 'RUNNING', 'STOPPED', 'ARCHIVED', 'ERROR')),
    -- OpenHands' lower-case agent states (loading, running, awaiting_user_input, finished, error, …).
    agent_state text NOT NULL DEFAULT 'loading',
    -- OpenHands' STATUS$… runtime status ids.
    runtime_status text,
    sandbox_id uuid REFERENCES sandboxes (id) ON DELETE SET NULL,
    llm_model text,
    iteration integer NOT NULL DEFAULT 0,
    max_iterations integer NOT NULL DEFAULT 100,
    -- Budget in USD; null means unlimited.
    max_budget_per_task double precision,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cache_read_tokens bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    accumulated_cost double precision NOT NULL DEFAULT 0,
    selected_repository text,
    selected_branch text,
    -- What started it: gui, api, slack, github, …
    trigger text,
    -- The compare-and-set counter of the step chain (DESIGN §4).
    step_seq bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX conversations_user_updated ON conversations (user_id, updated_at DESC);

CREATE TABLE events (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- Sequential from 0 per conversation, assigned at insert.
    id bigint NOT NULL CHECK (id >= 0),
    source text NOT NULL CHECK (source IN ('agent', 'user', 'environment')),
    -- The action or observation type ('run', 'message', 'agent_state_changed', …).
    kind text NOT NULL,
    -- The OpenHands V0 event JSON.
    payload jsonb NOT NULL,
    step bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, id)
);

CREATE TABLE llm_calls (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    step bigint NOT NULL,
    -- The model's response, reused when a step is redelivered.
    response jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, step)
);
