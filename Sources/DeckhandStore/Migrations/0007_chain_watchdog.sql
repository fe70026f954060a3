-- A chain whose step died (its retries exhausted, its message dead-lettered or never published) leaves the
-- agent `running` with nothing in flight. Conversation workers look for running conversations quiet for
-- longer than agent.step_watchdog and publish their step again; these count the restarts of one step, so a
-- step that keeps dying ends the chain in `error` instead of restarting for ever.
ALTER TABLE conversations ADD COLUMN watchdog_step bigint, ADD COLUMN watchdog_restarts integer NOT NULL DEFAULT 0;
CREATE INDEX conversations_running_quiet ON conversations (updated_at) WHERE agent_state = 'running';
