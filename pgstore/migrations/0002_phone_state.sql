-- The host's own per-phone state beside the WhatsApp store, each value the
-- bytes of its versioned format (the same bytes the single-node files hold).

-- Owner, desired state, reset tombstone and purge journal. Kept by
-- delete_phone: the tombstone must outlive the phone's other rows.
CREATE TABLE phone_records (
    phone text PRIMARY KEY,
    body bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The outbox, the message statuses and the contacts: removed by a reset.
CREATE TABLE phone_state (
    phone text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('outbox', 'statuses', 'contacts')),
    body bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (phone, kind)
);
