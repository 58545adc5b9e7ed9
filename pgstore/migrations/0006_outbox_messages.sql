-- A phone's outbox, a row per queued message (the body: the bytes of one
-- message in the host's format), in the order they were queued. An enqueue
-- inserts a row, a retry rewrites its row, a sent message's row is deleted:
-- each costs O(the message), not O(the queue). Removed by a reset (the
-- outbox part of the purge). Outboxes stored before this version, one
-- phone_state 'outbox' value each, are moved here by the host when it
-- next loads them under the phone's lease.
CREATE TABLE outbox_messages (
    phone text NOT NULL,
    id text NOT NULL,
    seq bigserial NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (phone, id)
);

CREATE INDEX outbox_messages_order ON outbox_messages (phone, seq);
