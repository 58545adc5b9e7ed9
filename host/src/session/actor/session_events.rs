//! The session's events onto the gateway's bus: a change of the published
//! view (status, QR, logout), a pairing code, a reset's report, a message's
//! new status. Called only where the state changed, so a quiet session
//! publishes nothing.

use std::sync::Arc;

use super::SessionActor;
use crate::core::event::{EventKind, ViewFacts, view_change_events};
use crate::core::message_status::MessageStatus;
use crate::core::reset_report::ResetReport;
use crate::session::SessionView;

fn facts(view: &SessionView) -> ViewFacts<'_> {
    ViewFacts {
        status: view.status,
        ready: view.ready,
        last_error: view.last_error.as_deref(),
        me: view.me.as_deref(),
        qr: view.qr.as_deref(),
    }
}

impl SessionActor {
    /// The events between two published views (see `view_change_events`).
    pub(super) fn publish_view_events(&self, before: &SessionView, after: &SessionView) {
        let kinds = view_change_events(&facts(before), &facts(after));
        if !kinds.is_empty() {
            self.ctx
                .events
                .publish_all(after.owner.as_ref(), &self.phone, kinds);
        }
    }

    /// WhatsApp issued a pairing code for this session.
    pub(super) fn publish_pairing_code(&self, code: &str) {
        self.ctx.events.publish(
            self.owner(),
            &self.phone,
            EventKind::Qr {
                qr: None,
                pairing_code: Some(code.to_owned()),
            },
        );
    }

    /// A reset finished (or was finished at boot).
    pub(super) fn publish_cleared(&self, report: &ResetReport) {
        self.ctx.events.publish(
            report.tenant.as_ref(),
            &self.phone,
            EventKind::Cleared {
                report: Arc::new(report.clone()),
            },
        );
    }

    /// Message `id` has a new status; nothing when it is unknown.
    pub(super) fn publish_message_status(&self, id: &str) {
        if let Some(status) = self.statuses.get(id) {
            self.ctx
                .events
                .publish(self.owner(), &self.phone, message_status_event(status));
        }
    }
}

fn message_status_event(status: &MessageStatus) -> EventKind {
    EventKind::MessageStatus {
        message_id: status.id.clone(),
        status: status.state,
        error: status.error.clone(),
    }
}
