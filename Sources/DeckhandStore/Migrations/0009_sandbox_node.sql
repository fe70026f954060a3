-- Many nodes (issue 15): the node whose runtime worker made a sandbox. Only that node's workers reconcile,
-- maintain and change it; its URL names the node's advertised address. Rows from before this migration
-- (one node) get the node of the first runtime worker that starts after it (SandboxStore.adoptUnassigned).
ALTER TABLE sandboxes ADD COLUMN node text NOT NULL DEFAULT '';
CREATE INDEX sandboxes_node ON sandboxes (node, status);
