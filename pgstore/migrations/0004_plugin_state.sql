-- The plugins' small key-value stores in cluster mode, so that a plugin
-- finds its state whichever node runs its hook. One scope per (plugin,
-- tenant), named as the folder a single node keeps it in under plugins/.
-- No phone column: a reset never touches a plugin's state.
CREATE TABLE plugin_state (
    scope text NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
