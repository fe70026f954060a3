-- Runtime-manager workers (issue 4): leases on provisions in progress, failure reasons, and
-- the record of handled messages that makes commands idempotent by message id.

ALTER TABLE sandboxes
    -- The worker creating or changing the sandbox, and until when that claim holds without a renewal.
    ADD COLUMN worker_id text,
    ADD COLUMN lease_until timestamptz,
    -- Why the sandbox is in `error` or `lost`.
    ADD COLUMN reason text,
    -- When the sandbox was first handed to a conversation.
    ADD COLUMN claimed_at timestamptz;

-- One live sandbox per conversation: a lost or failed one no longer counts, so the conversation can get
-- another.
DROP INDEX sandboxes_conversation_id;
CREATE UNIQUE INDEX sandboxes_conversation_id ON sandboxes (conversation_id)
    WHERE conversation_id IS NOT NULL AND status NOT IN ('lost', 'error');
CREATE INDEX sandboxes_idle ON sandboxes (status, last_active_at) WHERE conversation_id IS NOT NULL;

-- Messages a consumer has fully handled, by its name and the message id (DESIGN §2: the idempotency key).
CREATE TABLE processed_messages (
    consumer text NOT NULL,
    message_id text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX processed_messages_age ON processed_messages (processed_at);
