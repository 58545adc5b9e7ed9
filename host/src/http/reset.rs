//! Ending a session: `DELETE /api/sessions/{phone}` (disconnect: logged
//! out and stopped, the outbox kept) and `POST /api/sessions/{phone}/clear`
//! (the full reset, with its plugin hooks), with the reports they answer.
//! `events.rs` sends the same `ClearBody` in `session.cleared`.

use axum::extract::{Query, State};
use axum::http::Uri;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{AuthCaller, PhoneParam, PhonePath};
use super::json::{ErrorBody, Success};
use super::responses::{BadPhone, HostFailed, NoSession, NoToken, SessionTimeout};
use super::sessions::SessionStatus;
use super::{ApiError, AppState};
use crate::core::reset_plan::{PurgeTargetKind, RemovedTarget};
use crate::core::reset_report::{HookOutcome, HookRun, ResetReport};
use crate::core::tenant::Caller;
use crate::phone::Phone;
use crate::session::DisconnectReport;

/// Disconnect: logs the device out and stops the session, which does not
/// reconnect until it is created again. Drops the credentials, keeps the outbox.
#[utoipa::path(
    delete, path = "/api/sessions/{phone}", tag = "sessions",
    security(("bearer" = [])),
    params(PhonePath),
    responses(
        (status = 200, description = "Disconnected", body = Success<DisconnectBody>),
        BadPhone, NoToken, NoSession, HostFailed, SessionTimeout,
    )
)]
pub async fn disconnect_session(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Success<DisconnectBody>, ApiError> {
    let report = state.gateway.lookup(&phone)?.disconnect(caller).await?;
    Ok(Success::new(DisconnectBody::new(&phone, &report)))
}

/// The full reset: credentials, backups, outbox and statuses are deleted,
/// and nothing brings the phone back until it is created again.
#[utoipa::path(
    post, path = "/api/sessions/{phone}/clear", tag = "sessions",
    security(("bearer" = [])),
    params(PhonePath, ClearQuery),
    responses(
        (status = 200, description = "Reset: what was removed and which hooks ran (`forced` when an operator went past a tenant plugin's refusal)", body = Success<ClearBody>),
        (status = 400, description = "The phone is not 8–15 digits, or `force` is not `true` or `false`", body = ErrorBody),
        (status = 403, description = "`force` is an operator's: a tenant's token may not force a reset", body = ErrorBody),
        (status = 409, description = "A `before_clear` plugin vetoed the reset; nothing changed", body = ErrorBody),
        NoToken, NoSession, HostFailed, SessionTimeout,
    )
)]
pub async fn clear_session(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
    query: Result<Query<ClearQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Success<ClearBody>, ApiError> {
    let Ok(Query(query)) = query else {
        return Err(ApiError::BadRequest(
            "force must be true or false (POST …/clear?force=true)".into(),
        ));
    };
    let force = query.force.unwrap_or(false);
    if force && caller != Caller::Operator {
        return Err(ApiError::Forbidden(
            "only an operator may force a reset (force=true)".into(),
        ));
    }
    let report = state.gateway.clear(&phone, &caller, force).await?;
    Ok(Success::new(ClearBody::new(&phone, &report)))
}

/// `?force=true`: an operator's reset that a tenant's plugin cannot stop.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClearQuery {
    /// Operators only: go past the refusal (a veto, a fail-closed failure)
    /// of the tenant's own plugins; the operator's plugins still decide.
    /// The report and `session.cleared` say `forced: true`.
    pub force: Option<bool>,
}

/// Whether a request's query asks to force a reset (for the cluster's
/// forwarding, which must carry it through the database too).
pub fn asks_force(uri: &Uri) -> bool {
    Query::<ClearQuery>::try_from_uri(uri).is_ok_and(|Query(q)| q.force == Some(true))
}

/// `DELETE /api/sessions/{phone}`: logged out and stopped; the outbox is kept.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisconnectBody {
    #[schema(example = "51987654321")]
    pub phone_number: String,
    /// Always `stopped`.
    #[schema(value_type = SessionStatus)]
    pub status: &'static str,
    #[schema(
        example = "Session 51987654321 disconnected; it will not reconnect until it is created again"
    )]
    pub message: String,
    /// Whether a client was running and was logged out of WhatsApp.
    pub logged_out: bool,
    /// The credentials, their backups and the contacts.
    pub removed: Vec<RemovedBody>,
    pub pending_messages_kept: usize,
}

impl DisconnectBody {
    pub fn new(phone: &Phone, report: &DisconnectReport) -> DisconnectBody {
        DisconnectBody {
            phone_number: phone.as_str().to_owned(),
            status: "stopped",
            message: format!(
                "Session {phone} disconnected; it will not reconnect until it is created again"
            ),
            logged_out: report.logged_out,
            removed: report.removed.iter().map(RemovedBody::from).collect(),
            pending_messages_kept: report.pending_messages_kept,
        }
    }
}

/// `POST /api/sessions/{phone}/clear`: what the reset removed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClearBody {
    #[schema(example = "51987654321")]
    pub phone_number: String,
    #[schema(example = "Session 51987654321 cleared completely")]
    pub message: String,
    /// Whether a client was running and was logged out of WhatsApp.
    pub logged_out: bool,
    pub removed: Vec<RemovedBody>,
    /// Queued messages the reset dropped.
    pub outbox_messages_dropped: usize,
    /// `before_clear` calls, then `after_clear` calls.
    pub hooks: Vec<HookRunBody>,
    pub duration_ms: u64,
    /// An operator forced this reset past a tenant plugin's refusal (its
    /// run is in `hooks`, with its outcome).
    pub forced: bool,
}

impl ClearBody {
    pub fn new(phone: &Phone, report: &ResetReport) -> ClearBody {
        ClearBody {
            phone_number: phone.as_str().to_owned(),
            message: format!("Session {phone} cleared completely"),
            logged_out: report.logged_out,
            removed: report.removed.iter().map(RemovedBody::from).collect(),
            outbox_messages_dropped: report.outbox_messages_dropped(),
            hooks: report.hooks.iter().map(HookRunBody::from).collect(),
            duration_ms: report.duration_ms,
            forced: report.forced,
        }
    }
}

/// What a removed target was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RemovedKind {
    /// `data/sessions/{phone}/`: the credentials and store.
    Session,
    /// `data/sessions/backups/{phone}/`.
    Backups,
    /// `data/whatsapp/outbox/{phone}.json`.
    Outbox,
    /// `data/whatsapp/status/{phone}.json`.
    MessageStatuses,
}

impl From<PurgeTargetKind> for RemovedKind {
    fn from(kind: PurgeTargetKind) -> RemovedKind {
        match kind {
            PurgeTargetKind::SessionDir => RemovedKind::Session,
            PurgeTargetKind::Backups => RemovedKind::Backups,
            PurgeTargetKind::Outbox => RemovedKind::Outbox,
            PurgeTargetKind::MessageStatuses => RemovedKind::MessageStatuses,
        }
    }
}

/// One target a reset or a disconnect removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct RemovedBody {
    pub kind: RemovedKind,
    /// Relative to the data root.
    #[schema(example = "sessions/51987654321")]
    pub path: String,
    /// Whether there was anything there.
    pub existed: bool,
    pub files: usize,
    pub bytes: u64,
}

impl From<&RemovedTarget> for RemovedBody {
    fn from(r: &RemovedTarget) -> RemovedBody {
        RemovedBody {
            kind: r.kind.into(),
            path: r.path.to_string_lossy().into_owned(),
            existed: r.existed,
            files: r.files,
            bytes: r.bytes,
        }
    }
}

/// Which hook ran: the document's list of the `&'static str` values
/// `HookRun::hook` takes (`core::reset_report::{BEFORE_CLEAR, AFTER_CLEAR}`).
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookName {
    BeforeClear,
    AfterClear,
}

/// How a hook call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookOutcomeName {
    Ok,
    Vetoed,
    Failed,
    TimedOut,
    /// A fail-open plugin still compiling when its phase's budget ran out.
    Skipped,
}

impl From<&HookOutcome> for HookOutcomeName {
    fn from(outcome: &HookOutcome) -> HookOutcomeName {
        match outcome {
            HookOutcome::Ok => HookOutcomeName::Ok,
            HookOutcome::Vetoed(_) => HookOutcomeName::Vetoed,
            HookOutcome::Failed(_) => HookOutcomeName::Failed,
            HookOutcome::TimedOut => HookOutcomeName::TimedOut,
            HookOutcome::Skipped(_) => HookOutcomeName::Skipped,
        }
    }
}

/// One plugin hook call of a reset.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookRunBody {
    #[schema(example = "tenant-policy")]
    pub plugin: String,
    /// `before_clear` or `after_clear`.
    #[schema(value_type = HookName)]
    pub hook: &'static str,
    pub outcome: HookOutcomeName,
    /// The reason of a veto, a failure or a skip.
    pub detail: Option<String>,
    pub duration_ms: u64,
}

impl From<&HookRun> for HookRunBody {
    fn from(r: &HookRun) -> HookRunBody {
        HookRunBody {
            plugin: r.plugin.clone(),
            hook: r.hook,
            outcome: (&r.outcome).into(),
            detail: r.outcome.detail().map(str::to_owned),
            duration_ms: r.duration_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::reset_report::{AFTER_CLEAR, BEFORE_CLEAR};
    use crate::http::json::wire_name;

    #[test]
    fn the_documented_hook_names_are_those_the_reset_reports() {
        assert_eq!(wire_name(HookName::BeforeClear), BEFORE_CLEAR);
        assert_eq!(wire_name(HookName::AfterClear), AFTER_CLEAR);
    }

    #[test]
    fn core_vocabularies_map_to_the_names_the_api_always_used() {
        for kind in [
            PurgeTargetKind::SessionDir,
            PurgeTargetKind::Backups,
            PurgeTargetKind::Outbox,
            PurgeTargetKind::MessageStatuses,
        ] {
            assert_eq!(wire_name(RemovedKind::from(kind)), kind.as_str());
        }
        for outcome in [
            HookOutcome::Ok,
            HookOutcome::Vetoed("v".into()),
            HookOutcome::Failed("f".into()),
            HookOutcome::TimedOut,
            HookOutcome::Skipped("s".into()),
        ] {
            assert_eq!(wire_name(HookOutcomeName::from(&outcome)), outcome.as_str());
        }
    }
}
