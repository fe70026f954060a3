-- Node leases (issue 15): each node's runtime workers renew its row; a row whose lease ran out belongs to a
-- node taken for dead, whose sandboxes a surviving worker marks lost (SandboxStore.sweepLapsedNodes).
CREATE TABLE nodes (
    id text PRIMARY KEY,
    lease_until timestamptz NOT NULL,
    -- The address its sandboxes are published on, for operators.
    advertise_host text NOT NULL DEFAULT '',
    first_seen timestamptz NOT NULL DEFAULT now(),
    -- When a surviving worker took the node for dead and gave its sandboxes up; cleared when it renews again.
    swept_at timestamptz
);
CREATE INDEX nodes_lease ON nodes (lease_until);
