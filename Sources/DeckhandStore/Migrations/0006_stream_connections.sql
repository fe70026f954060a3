-- How many live-stream clients each gateway serves per conversation, so that num_connections counts every
-- gateway's (not only the one that answers). Each gateway writes its own rows when they change and touches
-- them every few seconds; rows not touched for 30 seconds belong to a gateway that died and are ignored (and
-- deleted by the next gateway that refreshes).
CREATE TABLE stream_connections (
    gateway text NOT NULL,
    conversation_id uuid NOT NULL,
    connections integer NOT NULL CHECK (connections > 0),
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, gateway)
);
CREATE INDEX stream_connections_gateway ON stream_connections (gateway);
