-- Cluster membership, and which phones a node should hold.

-- One row per running node: where the others reach it, and when it last
-- said it was alive. A node whose row is older than a lease's ttl counts
-- as gone (for the fair share), and its row is removed when it leaves.
CREATE TABLE nodes (
    node_id text PRIMARY KEY,
    url text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now()
);

-- Whether some node should hold the phone: its session is meant to run, or
-- a reset of it is unfinished. Written with the record by its holder; the
-- lease loop claims free phones where it is true.
ALTER TABLE phone_records ADD COLUMN wants_node boolean NOT NULL DEFAULT false;
CREATE INDEX phone_records_wanting_a_node ON phone_records (phone) WHERE wants_node;
