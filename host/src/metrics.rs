//! Counters for `GET /metrics`, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use crate::core::reset_report::HookOutcome;
use crate::core::status::ConnectFailureCause;

/// The outbox limits a refusal is counted under (`OutboxError::limit_label`).
pub const OUTBOX_LIMITS: [&str; 4] = [
    "phone_messages",
    "phone_bytes",
    "tenant_messages",
    "tenant_bytes",
];

#[derive(Debug, Default)]
pub struct Metrics {
    pub client_starts: AtomicU64,
    pub client_start_failures: AtomicU64,
    pub sessions_connected: AtomicI64,
    pub resets_completed: AtomicU64,
    pub resets_vetoed: AtomicU64,
    /// Resets an operator forced past a tenant plugin's refusal.
    pub resets_forced: AtomicU64,
    pub resets_failed: AtomicU64,
    pub resets_finished_at_boot: AtomicU64,
    pub server_logouts: AtomicU64,
    pub pairing_restarts: AtomicU64,
    pub messages_enqueued: AtomicU64,
    pub messages_sent: AtomicU64,
    pub message_send_failures: AtomicU64,
    pub backups_taken: AtomicU64,
    pub backup_failures: AtomicU64,
    pub backups_restored: AtomicU64,
    pub actor_panics: AtomicU64,
    /// Actors that ended because their phone had nothing to keep.
    pub actors_retired: AtomicU64,
    /// Sessions the last boot resumed, and how many of them connected again since.
    pub boot_sessions_resumed: AtomicI64,
    pub boot_sessions_reconnected: AtomicI64,
    /// The soft open-files limit `serve` runs with (0 when unlimited or unknown).
    pub open_files_limit: AtomicU64,
    /// Session starts refused because the node was out of descriptors.
    pub sessions_refused_open_files: AtomicU64,
    /// Cluster mode: leases this node claimed, leases it lost (expired
    /// during a pause, or taken over), sessions it handed to a node below
    /// its fair share, and the leases it holds (at the last round).
    pub cluster_leases_claimed: AtomicU64,
    pub cluster_leases_lost: AtomicU64,
    pub cluster_sessions_handed_over: AtomicU64,
    pub cluster_leases_held: AtomicI64,
    /// Session creates refused because the tenant owns as many sessions as
    /// it may (`limits.max_sessions_per_tenant`).
    pub sessions_refused_tenant_limit: AtomicU64,
    /// Outbox logs rewritten because dead lines outweighed the queue.
    pub outbox_compactions: AtomicU64,
    /// Messages refused by an outbox limit, in the order of `OUTBOX_LIMITS`.
    outbox_refused: [AtomicU64; OUTBOX_LIMITS.len()],
    /// The HTTP edge: its timeouts and bounds, when they were hit.
    pub http_edge: HttpEdgeMetrics,
    /// Cluster mode: requests marked as from another node, and NOTIFY
    /// payloads, refused for want of a valid proof (forged or replayed).
    pub cluster_proofs_refused: AtomicU64,
    /// Failed connection attempts, in the order of `ConnectFailureCause::ALL`.
    connection_failures: [AtomicU64; ConnectFailureCause::ALL.len()],
    /// When these counters started, i.e. when `serve` built its gateway.
    started: StartedAt,
}

/// The moment the metrics were created, for `lila_uptime_seconds` (measured
/// on the monotonic clock) and `process_start_time_seconds` (wall clock).
#[derive(Debug)]
struct StartedAt {
    monotonic: Instant,
    wall: SystemTime,
}

impl Default for StartedAt {
    fn default() -> StartedAt {
        StartedAt {
            monotonic: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_failed(&self, cause: ConnectFailureCause) {
        if let Some(i) = ConnectFailureCause::ALL.iter().position(|c| *c == cause) {
            Metrics::inc(&self.connection_failures[i]);
        }
    }

    /// A message refused by the outbox limit `limit` (one of `OUTBOX_LIMITS`).
    pub fn outbox_refused(&self, limit: &str) {
        if let Some(i) = OUTBOX_LIMITS.iter().position(|l| *l == limit) {
            Metrics::inc(&self.outbox_refused[i]);
        }
    }

    pub fn connection_failures(&self, cause: ConnectFailureCause) -> u64 {
        ConnectFailureCause::ALL
            .iter()
            .position(|c| *c == cause)
            .map_or(0, |i| self.connection_failures[i].load(Ordering::Relaxed))
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
            "lila_sessions_refused_open_files_total",
            "Session starts refused because the node was out of file descriptors (see lila_open_files_limit).",
            get(&self.sessions_refused_open_files),
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
            "lila_resets_forced_total",
            "Resets an operator forced past a tenant plugin's refusal.",
            get(&self.resets_forced),
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
            "lila_pairing_restarts_total",
            "Pairings started again with a new client because their connection dropped (its QR codes died with it).",
            get(&self.pairing_restarts),
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
        counter(
            "lila_actors_retired_total",
            "Session actors that ended because their phone had no record, no files and nothing running (a request about a number the host does not have).",
            get(&self.actors_retired),
        );
        counter(
            "lila_cluster_leases_claimed_total",
            "Cluster mode: phone leases this node claimed (free phones, and phones a request was about).",
            get(&self.cluster_leases_claimed),
        );
        counter(
            "lila_cluster_leases_lost_total",
            "Cluster mode: leases this node lost (expired during a pause, or taken over); each session was stopped here.",
            get(&self.cluster_leases_lost),
        );
        counter(
            "lila_cluster_proofs_refused_total",
            "Cluster mode: requests between nodes and NOTIFY payloads refused for want of a valid cluster-secret proof (forged or replayed).",
            get(&self.cluster_proofs_refused),
        );
        counter(
            "lila_cluster_sessions_handed_over_total",
            "Cluster mode: sessions this node handed to a node below its fair share.",
            get(&self.cluster_sessions_handed_over),
        );
        counter(
            "lila_sessions_refused_tenant_limit_total",
            "Session creates refused because the tenant owns as many sessions as it may.",
            self.sessions_refused_tenant_limit.load(Ordering::Relaxed),
        );
        counter(
            "lila_outbox_compactions_total",
            "Outbox logs rewritten with their queue alone.",
            self.outbox_compactions.load(Ordering::Relaxed),
        );
        out.push_str("# HELP lila_outbox_refused_total Messages refused by an outbox limit, by limit (per phone or per tenant, messages or bytes).\n# TYPE lila_outbox_refused_total counter\n");
        for (i, limit) in OUTBOX_LIMITS.iter().enumerate() {
            let _ = writeln!(
                out,
                "lila_outbox_refused_total{{limit=\"{limit}\"}} {}",
                self.outbox_refused[i].load(Ordering::Relaxed)
            );
        }
        self.http_edge.render(&mut out);
        out.push_str("# HELP lila_connection_failures_total Connection attempts to WhatsApp that failed, by cause (each is retried after a back-off).\n# TYPE lila_connection_failures_total counter\n");
        for cause in ConnectFailureCause::ALL {
            let _ = writeln!(
                out,
                "lila_connection_failures_total{{cause=\"{}\"}} {}",
                cause.as_str(),
                self.connection_failures(cause)
            );
        }
        let _ = writeln!(
            out,
            "# HELP lila_boot_sessions_resumed Sessions the last start resumed.\n# TYPE lila_boot_sessions_resumed gauge\nlila_boot_sessions_resumed {}\n# HELP lila_boot_sessions_reconnected Sessions resumed at the last start that have connected again.\n# TYPE lila_boot_sessions_reconnected gauge\nlila_boot_sessions_reconnected {}",
            self.boot_sessions_resumed.load(Ordering::Relaxed),
            self.boot_sessions_reconnected.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP lila_cluster_leases_held Cluster mode: phone leases this node holds.\n# TYPE lila_cluster_leases_held gauge\nlila_cluster_leases_held {}",
            self.cluster_leases_held.load(Ordering::Relaxed)
        );
        if let Some(open) = crate::limits::open_files() {
            let _ = writeln!(
                out,
                "# HELP lila_open_files Descriptors the process has open.\n# TYPE lila_open_files gauge\nlila_open_files {open}"
            );
        }
        let limit = self.open_files_limit.load(Ordering::Relaxed);
        if limit > 0 {
            let _ = writeln!(
                out,
                "# HELP lila_open_files_limit The soft limit on open descriptors (0: none).\n# TYPE lila_open_files_limit gauge\nlila_open_files_limit {limit}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP lila_uptime_seconds Seconds since this process started serving.\n# TYPE lila_uptime_seconds gauge\nlila_uptime_seconds {}",
            self.started.monotonic.elapsed().as_secs()
        );
        if let Ok(since_epoch) = self.started.wall.duration_since(SystemTime::UNIX_EPOCH) {
            let _ = writeln!(
                out,
                "# HELP process_start_time_seconds Start time of the process since the Unix epoch, in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}",
                since_epoch.as_secs()
            );
        }
        let _ = writeln!(
            out,
            "# HELP lila_sessions_connected Sessions connected right now.\n# TYPE lila_sessions_connected gauge\nlila_sessions_connected {}",
            self.sessions_connected.load(Ordering::Relaxed)
        );
        out
    }
}

/// Upper bounds (ms) of the hook latency histogram's buckets.
/// Whether a series may name a tenant: only for a reader who may know them
/// all (the metrics token, an operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantLabels {
    Shown,
    Summed,
}

/// The `plugin` label of tenants' plugins summed together.
pub const TENANT_PLUGINS: &str = "(tenant plugins)";

const HOOK_LATENCY_BUCKETS_MS: [u64; 9] = [1, 5, 10, 25, 50, 100, 250, 1000, 5000];
const HOOKS: [&str; 3] = ["before_clear", "after_clear", "on_event"];
const OUTCOMES: [&str; 5] = ["ok", "vetoed", "failed", "timed_out", "skipped"];
/// The plugin runtime's limits, as `lila_plugin_limits_hit_total` names them.
pub const PLUGIN_LIMITS: [&str; 9] = [
    "memory",
    "instances",
    "memories",
    "tables",
    "concurrent_calls",
    "file_size",
    "compile_time",
    "concurrent_compiles",
    "archive_quota",
];

/// Plugin hook calls: counts by hook and outcome, and a latency histogram by hook.
#[derive(Debug, Default)]
pub struct HookMetrics {
    /// `[hook][outcome]`, in the order of `HOOKS` and `OUTCOMES`.
    calls: [[AtomicU64; OUTCOMES.len()]; HOOKS.len()],
    /// `[hook][bucket]`, cumulative counts are computed when rendering.
    latency_buckets: [[AtomicU64; HOOK_LATENCY_BUCKETS_MS.len()]; HOOKS.len()],
    latency_sum_ms: [AtomicU64; HOOKS.len()],
    latency_count: [AtomicU64; HOOKS.len()],
    /// Events no `on-event` hook got: its queue was full, or the dispatcher
    /// fell behind the bus. By plugin key (`*` for the dispatcher).
    events_dropped: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Times a plugin went past a limit of the runtime, in the order of `PLUGIN_LIMITS`.
    limits_hit: [AtomicU64; PLUGIN_LIMITS.len()],
    /// Calls that found every call slot busy and had to wait, by hook.
    calls_waited: [AtomicU64; HOOKS.len()],
}

impl HookMetrics {
    pub fn record(&self, hook: &str, outcome: &HookOutcome, duration_ms: u64) {
        let Some(h) = HOOKS.iter().position(|name| *name == hook) else {
            return;
        };
        let o = match outcome {
            HookOutcome::Ok => 0,
            HookOutcome::Vetoed(_) => 1,
            HookOutcome::Failed(_) => 2,
            HookOutcome::TimedOut => 3,
            HookOutcome::Skipped(_) => 4,
        };
        Metrics::inc(&self.calls[h][o]);
        if let Some(b) = HOOK_LATENCY_BUCKETS_MS
            .iter()
            .position(|bound| duration_ms <= *bound)
        {
            Metrics::inc(&self.latency_buckets[h][b]);
        }
        self.latency_sum_ms[h].fetch_add(duration_ms, Ordering::Relaxed);
        Metrics::inc(&self.latency_count[h]);
    }

    /// Counts one time a plugin went past `limit` (one of `PLUGIN_LIMITS`).
    pub fn limit_hit(&self, limit: &str) {
        if let Some(i) = PLUGIN_LIMITS.iter().position(|name| *name == limit) {
            Metrics::inc(&self.limits_hit[i]);
        }
    }

    /// Counts one `hook` call that had to wait for a call slot.
    pub fn call_waited(&self, hook: &str) {
        if let Some(h) = HOOKS.iter().position(|name| *name == hook) {
            Metrics::inc(&self.calls_waited[h]);
        }
    }

    /// Counts `count` events that plugin `key` (or `*`: every event hook) never got.
    pub fn events_dropped(&self, key: &str, count: u64) {
        let mut dropped = self
            .events_dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *dropped.entry(key.to_owned()).or_default() += count;
    }

    /// The Prometheus text of these metrics (all zero when `metrics` is
    /// `None`); a tenant's plugins (`{tenant}/{name}`) by name, or summed
    /// into one series that names no tenant.
    pub fn render(metrics: Option<&HookMetrics>, tenants: TenantLabels) -> String {
        let zero = HookMetrics::default();
        let m = metrics.unwrap_or(&zero);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str("# HELP lila_hook_calls_total Plugin hook calls, by hook and outcome (failed and timed_out are failures; vetoed are refusals; skipped were not ready).\n# TYPE lila_hook_calls_total counter\n");
        for (h, hook) in HOOKS.iter().enumerate() {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "lila_hook_calls_total{{hook=\"{hook}\",outcome=\"{outcome}\"}} {}",
                    get(&m.calls[h][o])
                );
            }
        }
        out.push_str("# HELP lila_hook_duration_ms Duration of plugin hook calls in milliseconds.\n# TYPE lila_hook_duration_ms histogram\n");
        for (h, hook) in HOOKS.iter().enumerate() {
            let mut cumulative = 0;
            for (b, bound) in HOOK_LATENCY_BUCKETS_MS.iter().enumerate() {
                cumulative += get(&m.latency_buckets[h][b]);
                let _ = writeln!(
                    out,
                    "lila_hook_duration_ms_bucket{{hook=\"{hook}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = get(&m.latency_count[h]);
            let _ = writeln!(
                out,
                "lila_hook_duration_ms_bucket{{hook=\"{hook}\",le=\"+Inf\"}} {count}\nlila_hook_duration_ms_sum{{hook=\"{hook}\"}} {}\nlila_hook_duration_ms_count{{hook=\"{hook}\"}} {count}",
                get(&m.latency_sum_ms[h])
            );
        }
        out.push_str("# HELP lila_plugin_limits_hit_total Times a plugin went past a limit of the runtime: its memory cap (all memories and tables of a call), the core instances, memories or tables a call may create, the call slots (a call that found none free in time did not run), the file size, the compile time, the compile slots (a compile that waited for one), or its archive quota.\n# TYPE lila_plugin_limits_hit_total counter\n");
        for (i, limit) in PLUGIN_LIMITS.iter().enumerate() {
            let _ = writeln!(
                out,
                "lila_plugin_limits_hit_total{{limit=\"{limit}\"}} {}",
                get(&m.limits_hit[i])
            );
        }
        out.push_str("# HELP lila_plugin_calls_waited_total Plugin calls that found every call slot (plugins.max_concurrent_calls) busy and waited for one, by hook.\n# TYPE lila_plugin_calls_waited_total counter\n");
        for (h, hook) in HOOKS.iter().enumerate() {
            let _ = writeln!(
                out,
                "lila_plugin_calls_waited_total{{hook=\"{hook}\"}} {}",
                get(&m.calls_waited[h])
            );
        }
        out.push_str("# HELP lila_plugin_events_dropped_total Events an on-event hook never got (its queue was full; plugin \"*\": the dispatcher fell behind).\n# TYPE lila_plugin_events_dropped_total counter\n");
        let dropped = m.events_dropped.lock().unwrap_or_else(|p| p.into_inner());
        let mut shown: BTreeMap<&str, u64> = BTreeMap::new();
        for (plugin, count) in dropped.iter() {
            let label = match tenants {
                TenantLabels::Summed if plugin.contains('/') => TENANT_PLUGINS,
                _ => plugin.as_str(),
            };
            *shown.entry(label).or_default() += count;
        }
        for (plugin, count) in shown {
            let _ = writeln!(
                out,
                "lila_plugin_events_dropped_total{{plugin=\"{plugin}\"}} {count}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str) -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    #[test]
    fn uptime_counts_from_when_the_metrics_were_made() {
        let mut m = Metrics::default();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(sample(&m.render(), "lila_uptime_seconds"), 0);
        let start = sample(&m.render(), "process_start_time_seconds");
        assert!(start.abs_diff(now) <= 1, "{start} vs {now}");
        // As if the process had been serving for 90 s.
        m.started.monotonic -= std::time::Duration::from_secs(90);
        assert_eq!(sample(&m.render(), "lila_uptime_seconds"), 90);
    }

    #[test]
    fn connection_failures_are_counted_by_cause() {
        let m = Metrics::default();
        m.connection_failed(ConnectFailureCause::Refused);
        m.connection_failed(ConnectFailureCause::Refused);
        m.connection_failed(ConnectFailureCause::Unreachable);
        let text = m.render();
        assert!(
            text.contains("lila_connection_failures_total{cause=\"refused\"} 2"),
            "{text}"
        );
        assert!(text.contains("lila_connection_failures_total{cause=\"unreachable\"} 1"));
        assert!(text.contains("lila_connection_failures_total{cause=\"timeout\"} 0"));
        assert_eq!(
            text.matches("# TYPE lila_connection_failures_total counter")
                .count(),
            1
        );
    }

    #[test]
    fn an_anonymous_reader_sees_tenants_plugins_summed_without_their_tenant() {
        let m = HookMetrics::default();
        m.events_dropped("webhook-notify", 2);
        m.events_dropped("acme/guard", 3);
        m.events_dropped("zeta/guard", 4);
        let shown = HookMetrics::render(Some(&m), TenantLabels::Shown);
        assert!(shown.contains("lila_plugin_events_dropped_total{plugin=\"acme/guard\"} 3"));
        let summed = HookMetrics::render(Some(&m), TenantLabels::Summed);
        assert!(
            !summed.contains("acme") && !summed.contains("zeta"),
            "{summed}"
        );
        assert!(summed.contains(&format!(
            "lila_plugin_events_dropped_total{{plugin=\"{TENANT_PLUGINS}\"}} 7"
        )));
        assert!(summed.contains("lila_plugin_events_dropped_total{plugin=\"webhook-notify\"} 2"));
    }

    #[test]
    fn hook_calls_are_counted_by_outcome_with_a_latency_histogram() {
        let m = HookMetrics::default();
        m.record("before_clear", &HookOutcome::Ok, 3);
        m.record("before_clear", &HookOutcome::TimedOut, 1200);
        m.record("after_clear", &HookOutcome::Failed("x".into()), 7);
        let text = HookMetrics::render(Some(&m), TenantLabels::Shown);
        assert!(
            text.contains("lila_hook_calls_total{hook=\"before_clear\",outcome=\"timed_out\"} 1"),
            "{text}"
        );
        assert!(text.contains("lila_hook_calls_total{hook=\"after_clear\",outcome=\"failed\"} 1"));
        assert!(text.contains("lila_hook_duration_ms_bucket{hook=\"before_clear\",le=\"5\"} 1"));
        assert!(text.contains("lila_hook_duration_ms_bucket{hook=\"before_clear\",le=\"+Inf\"} 2"));
        assert!(text.contains("lila_hook_duration_ms_sum{hook=\"before_clear\"} 1203"));
        assert!(
            HookMetrics::render(None, TenantLabels::Shown)
                .contains("lila_hook_duration_ms_count{hook=\"after_clear\"} 0")
        );
    }
}

/// What the HTTP edge counts (`http/edge.rs`, `http/caller_limits.rs`):
/// each limit of `[http]` and `events.max_streams_per_caller`, when hit.
#[derive(Debug, Default)]
pub struct HttpEdgeMetrics {
    /// Connections open now.
    pub connections_open: AtomicI64,
    /// Connections closed because their request head took longer than `http.header_timeout`.
    pub header_timeouts: AtomicU64,
    /// Keep-alive connections closed after `http.idle_timeout` with no request.
    pub idle_closed: AtomicU64,
    /// Connections without a request in flight closed to make room at `http.max_connections`.
    pub connections_evicted: AtomicU64,
    /// New connections that had to wait for a free slot (every connection had a request in flight).
    pub connections_waited: AtomicU64,
    /// Requests answered 429 because their tenant was at `http.max_requests_per_tenant`.
    pub tenant_requests_refused: AtomicU64,
    /// Event streams answered 429 because their caller was at `events.max_streams_per_caller`.
    pub event_streams_refused: AtomicU64,
    /// Event streams ended because their token expired.
    pub event_streams_expired: AtomicU64,
}

impl HttpEdgeMetrics {
    fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counters = [
            (
                "lila_http_header_timeouts_total",
                "Connections closed because a request head took longer than http.header_timeout.",
                get(&self.header_timeouts),
            ),
            (
                "lila_http_idle_connections_closed_total",
                "Keep-alive connections closed after http.idle_timeout without a request.",
                get(&self.idle_closed),
            ),
            (
                "lila_http_connections_evicted_total",
                "Connections without a request in flight closed to make room at http.max_connections.",
                get(&self.connections_evicted),
            ),
            (
                "lila_http_connections_waited_total",
                "New connections that waited for a slot at http.max_connections (every connection had a request in flight).",
                get(&self.connections_waited),
            ),
            (
                "lila_http_tenant_requests_refused_total",
                "Requests answered 429 because their tenant had http.max_requests_per_tenant in flight.",
                get(&self.tenant_requests_refused),
            ),
            (
                "lila_event_streams_refused_total",
                "Event streams answered 429 because their caller held events.max_streams_per_caller.",
                get(&self.event_streams_refused),
            ),
            (
                "lila_event_streams_expired_total",
                "Event streams ended because their token expired.",
                get(&self.event_streams_expired),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP lila_http_connections_open HTTP connections open now.\n# TYPE lila_http_connections_open gauge\nlila_http_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
    }
}
