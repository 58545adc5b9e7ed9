-- A reset asked through a node that could not reach the phone's holder over
-- HTTP (a partition between nodes, not from the database): the asking node
-- writes the request here and tells the holder over LISTEN/NOTIFY
-- (`lila_reset`); the holder runs the reset and writes its answer (the HTTP
-- status and JSON body); the asking node returns that answer. The column is
-- `target`, not `phone`, so that the reset's own purge leaves the row alone.
CREATE TABLE reset_requests (
    id bigserial PRIMARY KEY,
    target text NOT NULL,
    caller text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    status integer,
    answer text
);
