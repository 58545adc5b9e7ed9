//! Counters for `GET /metrics`, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub client_starts: AtomicU64,
    pub client_start_failures: AtomicU64,
    pub sessions_connected: AtomicI64,
    pub resets_completed: AtomicU64,
    pub resets_vetoed: AtomicU64,
    pub resets_failed: AtomicU64,
    pub resets_finished_at_boot: AtomicU64,
    pub server_logouts: AtomicU64,
    pub messages_enqueued: AtomicU64,
    pub messages_sent: AtomicU64,
    pub message_send_failures: AtomicU64,
    pub backups_taken: AtomicU64,
    pub backup_failures: AtomicU64,
    pub backups_restored: AtomicU64,
    pub actor_panics: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "lila_client_starts_total",
            "WhatsApp clients started.",
            get(&self.client_starts),
        );
        counter(
            "lila_client_start_failures_total",
            "WhatsApp clients that failed to start.",
            get(&self.client_start_failures),
        );
        counter(
            "lila_resets_completed_total",
            "Resets that completed.",
            get(&self.resets_completed),
        );
        counter(
            "lila_resets_vetoed_total",
            "Resets refused by a before_clear hook.",
            get(&self.resets_vetoed),
        );
        counter(
            "lila_resets_failed_total",
            "Resets that failed on the host's side.",
            get(&self.resets_failed),
        );
        counter(
            "lila_resets_finished_at_boot_total",
            "Interrupted resets finished at start-up.",
            get(&self.resets_finished_at_boot),
        );
        counter(
            "lila_server_logouts_total",
            "Sessions unlinked from the phone's side.",
            get(&self.server_logouts),
        );
        counter(
            "lila_messages_enqueued_total",
            "Messages accepted into an outbox.",
            get(&self.messages_enqueued),
        );
        counter(
            "lila_messages_sent_total",
            "Messages sent from an outbox.",
            get(&self.messages_sent),
        );
        counter(
            "lila_message_send_failures_total",
            "Failed send attempts (retried).",
            get(&self.message_send_failures),
        );
        counter(
            "lila_backups_taken_total",
            "Store snapshots taken.",
            get(&self.backups_taken),
        );
        counter(
            "lila_backup_failures_total",
            "Store snapshots that failed.",
            get(&self.backup_failures),
        );
        counter(
            "lila_backups_restored_total",
            "Stores restored from a snapshot.",
            get(&self.backups_restored),
        );
        counter(
            "lila_actor_panics_total",
            "Session actors that panicked (and were restarted on next use).",
            get(&self.actor_panics),
        );
        let _ = writeln!(
            out,
            "# HELP lila_sessions_connected Sessions connected right now.\n# TYPE lila_sessions_connected gauge\nlila_sessions_connected {}",
            self.sessions_connected.load(Ordering::Relaxed)
        );
        out
    }
}
