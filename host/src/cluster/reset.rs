//! A reset through the database: for a holder that keeps its lease (it
//! renews) but that this node cannot reach over HTTP.
//!
//! The asking node writes a `reset_requests` row (the phone and the caller)
//! and tells the holder over LISTEN/NOTIFY (channel [`RESET_CHANNEL`],
//! payload `"{holder} {id} {phone} {caller}"`, sealed with the cluster
//! secret: a notification not made by a node is dropped and counted, and
//! the holder runs a request only when its row says what the notification
//! did, so a row written into the database by someone else runs nothing);
//! the holder runs the reset and writes its
//! answer into the row, as the HTTP API would have answered `POST
//! /api/sessions/{phone}/clear` (status and JSON body); the asking node
//! takes that answer and returns it as it is. What the answer looks like is
//! `http/`'s: the holder's listener is given a [`RenderReset`] that turns
//! the reset's typed result into the stored status and body.

use std::sync::Arc;
use std::time::Duration;

use hyper::http::{HeaderValue, StatusCode};
use lila_pgstore::{notify, reset_requests};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, info, warn};

use super::peers::PeerAnswer;
use super::{Cluster, ClusterError};
use crate::core::reset_report::ResetReport;
use crate::core::tenant::{Caller, TenantId};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::phone::Phone;

/// The channel a node asks a holder it cannot reach to run a reset on.
pub const RESET_CHANNEL: &str = "lila_reset";

/// How long a reset asked through the database may take to be answered.
const RESET_ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// An answer as a `reset_requests` row stores it: the HTTP status and the
/// JSON body the asking node returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: String,
}

/// Renders what a reset asked of this node came to (the session's report
/// or why not: `ClusterError::Session`, or `Moving` when this node no
/// longer holds the phone) as the answer the row stores.
pub type RenderReset =
    fn(&Phone, Result<ResetReport, ClusterError>) -> serde_json::Result<StoredAnswer>;

/// The caller as a reset request carries it.
/// The caller column of a `reset_requests` row: `tenant:{id}`, `operator`,
/// or `operator+force` for an operator's forced reset (a node that predates
/// it reads that as no caller, and refuses the request rather than run it
/// unforced).
fn caller_label(caller: &Caller, force: bool) -> String {
    match caller {
        Caller::Operator if force => "operator+force".to_owned(),
        Caller::Operator => "operator".to_owned(),
        Caller::Tenant(tenant) => format!("tenant:{}", tenant.as_str()),
    }
}

fn caller_from_label(label: &str) -> Option<(Caller, bool)> {
    match label.strip_prefix("tenant:") {
        Some(tenant) => TenantId::parse(tenant)
            .ok()
            .map(|t| (Caller::Tenant(t), false)),
        None => match label {
            "operator" => Some((Caller::Operator, false)),
            "operator+force" => Some((Caller::Operator, true)),
            _ => None,
        },
    }
}

/// A reset request, as the proven notification that announced it says.
struct Asked {
    id: i64,
    target: String,
    caller: String,
}

impl Cluster {
    /// Asks `holder`, which this node cannot reach over HTTP while it still
    /// holds `phone`'s lease, to reset the phone for `caller`: the request
    /// is written to the database, the holder is told over LISTEN/NOTIFY,
    /// runs the reset, and writes the answer returned here as it is.
    /// `NoAnswer` when none comes within a minute.
    pub(super) async fn reset_through_the_database(
        &self,
        phone: &Phone,
        caller: &Caller,
        force: bool,
        holder: &str,
    ) -> Result<PeerAnswer, ClusterError> {
        let pool = &self.pool;
        let id =
            reset_requests::request(pool, phone.as_str(), &caller_label(caller, force)).await?;
        info!(phone = %phone, holder = %holder, request = id, "the holder cannot be reached over HTTP; asking it through the database");
        let asked = self.proofs.seal(
            RESET_CHANNEL,
            &format!(
                "{holder} {id} {} {}",
                phone.as_str(),
                caller_label(caller, force)
            ),
        );
        if let Err(e) = notify::notify(pool, RESET_CHANNEL, &asked).await {
            let _ = reset_requests::forget(pool, id).await;
            return Err(e.into());
        }
        let started = Instant::now();
        while started.elapsed() < RESET_ANSWER_WITHIN {
            match reset_requests::take_answer(pool, id).await? {
                Some((status, body)) => {
                    return Ok(PeerAnswer {
                        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                        content_type: Some(HeaderValue::from_static("application/json")),
                        body: body.into_bytes(),
                    });
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let _ = reset_requests::forget(pool, id).await;
        Err(ClusterError::NoAnswer {
            holder: holder.to_owned(),
        })
    }

    /// The holder's side: runs the resets other nodes ask of this one
    /// through the database, each answer rendered by `render`; listens
    /// again whenever the connection ends.
    pub fn spawn_reset_listener(
        self: &Arc<Self>,
        gateway: Arc<Gateway>,
        database_url: String,
        render: RenderReset,
    ) -> JoinHandle<()> {
        let cluster = self.clone();
        let span = tracing::info_span!("reset_listener", node_id = %self.node_id);
        tokio::spawn(
            async move {
                notify::listen_forever(&database_url, RESET_CHANNEL, |sealed| {
                    let text = match cluster.proofs.open(RESET_CHANNEL, &sealed) {
                        Ok(text) => text,
                        Err(e) => {
                            Metrics::inc(&gateway.metrics().cluster_proofs_refused);
                            warn!(error = %e, "dropped a reset request without a valid cluster proof");
                            return;
                        }
                    };
                    let mut words = text.split(' ');
                    if let (Some(node), Some(Ok(id)), Some(target), Some(caller)) = (
                        words.next(),
                        words.next().map(str::parse::<i64>),
                        words.next(),
                        words.next(),
                    ) && node == cluster.node_id
                    {
                        let asked = Asked {
                            id,
                            target: target.to_owned(),
                            caller: caller.to_owned(),
                        };
                        let (cluster, gateway) = (cluster.clone(), gateway.clone());
                        tokio::spawn(
                            async move { cluster.run_asked_reset(&gateway, asked, render).await }
                                .in_current_span(),
                        );
                    }
                })
                .await
            }
            .instrument(span),
        )
    }

    /// Runs reset request `asked` here and writes its answer: only when
    /// its row says what the proven notification said (a row forged or
    /// altered in the database is not run).
    async fn run_asked_reset(&self, gateway: &Gateway, asked: Asked, render: RenderReset) {
        let pool = &self.pool;
        let id = asked.id;
        let Ok(Some((target, caller))) = reset_requests::pending(pool, id).await else {
            return;
        };
        if (target.as_str(), caller.as_str()) != (asked.target.as_str(), asked.caller.as_str()) {
            Metrics::inc(&gateway.metrics().cluster_proofs_refused);
            warn!(
                request = id,
                "a reset request whose row differs from what its node asked; not run"
            );
            return;
        }
        let (Ok(phone), Some((caller, force))) =
            (Phone::parse(&target), caller_from_label(&caller))
        else {
            warn!(request = id, error = %format!("a reset request this node cannot read: {target} {caller}"), "could not run a reset asked through the database");
            return;
        };
        let outcome = if self.holds(&phone) {
            gateway
                .clear(&phone, &caller, force)
                .await
                .map_err(ClusterError::from)
        } else {
            Err(ClusterError::Moving)
        };
        match render(&phone, outcome) {
            Ok(answer) => {
                if let Err(e) = reset_requests::answer(pool, id, answer.status, &answer.body).await
                {
                    warn!(request = id, error = %e, "could not answer a reset asked through the database");
                }
            }
            Err(e) => {
                warn!(request = id, error = %e, "could not run a reset asked through the database")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_reads_back_from_its_label() {
        for caller in [
            Caller::Operator,
            Caller::Tenant(TenantId::parse("acme").unwrap()),
        ] {
            for force in [false, true] {
                let forced = force && caller == Caller::Operator;
                assert_eq!(
                    caller_from_label(&caller_label(&caller, force)),
                    Some((caller.clone(), forced))
                );
            }
        }
        assert_eq!(caller_from_label("tenant:"), None);
        assert_eq!(caller_from_label("someone"), None);
    }
}
