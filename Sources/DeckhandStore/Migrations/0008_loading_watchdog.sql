-- The chain watchdog also looks after conversations waiting in `loading` for a sandbox whose provision (or
-- its answer) died: it lists those quiet for longer than agent.step_watchdog and asks for their sandbox
-- again. This index keeps that look as cheap as the one at running conversations.
CREATE INDEX conversations_loading_quiet ON conversations (updated_at) WHERE agent_state = 'loading';
