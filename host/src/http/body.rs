//! The HTTP API's request and response bodies as typed serde structs, with
//! the OpenAPI schemas `openapi.rs` publishes, and the conversions from the
//! host's own types (`SessionView`, `ResetReport`, `HookRun`, …) to them.
//!
//! The JSON names here are the Portal contract (SPEC section 3): a renamed
//! field breaks the Portal. `Success` and `ErrorBody`, which every body
//! goes through, are `json.rs`.

use serde::Serialize;
use utoipa::ToSchema;

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message_status::DeliveryState;
    use crate::core::outbox::Recipient;
    use crate::core::reset_plan::PurgeTargetKind;
    use crate::core::reset_report::HookOutcome;
    use crate::core::reset_report::{AFTER_CLEAR, BEFORE_CLEAR};
    use crate::core::status::Status;
    use crate::http::messages::{MessageState, RECIPIENT_PATTERN};
    use crate::http::reset::{HookName, HookOutcomeName, RemovedKind};
    use crate::http::sessions::{PHONE_PATTERN, SessionStatus};
    use crate::phone::Phone;

    /// Whatever the document promises, the API accepts: a client (or
    /// schemathesis) that follows the patterns never gets a 400 for them.
    #[test]
    fn the_documented_patterns_never_promise_what_the_parsers_refuse() {
        let recipient = regex::Regex::new(RECIPIENT_PATTERN).unwrap();
        let phone = regex::Regex::new(PHONE_PATTERN).unwrap();
        let samples = [
            "51900000001",
            " 51900000001 ",
            "1234567",
            "1234567890123456",
            "51900000001@s.whatsapp.net",
            "5190000@s.whatsapp.net",
            "120363025246125486@g.us",
            "5511999999999-1600000000@g.us",
            "12345678901234567890-1234567890123456789@g.us",
            "-1@g.us",
            "1-@g.us",
            "abc",
            "",
            "51900000001@g.us",
            "+51900000001",
            "51900000001\n",
        ];
        let mut matched = 0;
        for sample in samples {
            if recipient.is_match(sample) {
                matched += 1;
                assert!(Recipient::parse(sample).is_ok(), "{sample:?}");
            }
            if phone.is_match(sample) {
                assert!(Phone::parse(sample).is_ok(), "{sample:?}");
            }
        }
        assert_eq!(matched, 8, "the pattern matches the usual shapes");
    }

    fn name(value: impl Serialize) -> String {
        serde_json::to_value(value)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn the_documented_session_statuses_are_those_the_sessions_report() {
        let documented: Vec<String> = [
            SessionStatus::Starting,
            SessionStatus::Qr,
            SessionStatus::Connected,
            SessionStatus::Reconnecting,
            SessionStatus::Stopped,
            SessionStatus::LoggedOut,
            SessionStatus::Failed,
            SessionStatus::Cleared,
        ]
        .into_iter()
        .map(name)
        .collect();
        let statuses = [
            Status::Stopped,
            Status::Starting,
            Status::Qr,
            Status::Connected,
            Status::Reconnecting,
            Status::LoggedOut,
            Status::Failed,
        ];
        // Plus what a session at rest or cleared says (session/index.rs, actor/commands.rs).
        for reported in statuses
            .map(Status::as_str)
            .into_iter()
            .chain(["logged_out", "cleared"])
        {
            assert!(documented.iter().any(|d| d == reported), "{reported}");
        }
        assert_eq!(name(HookName::BeforeClear), BEFORE_CLEAR);
        assert_eq!(name(HookName::AfterClear), AFTER_CLEAR);
    }

    #[test]
    fn core_vocabularies_map_to_the_names_the_api_always_used() {
        for state in [
            DeliveryState::Queued,
            DeliveryState::Sent,
            DeliveryState::Delivered,
            DeliveryState::Read,
            DeliveryState::Failed,
        ] {
            assert_eq!(name(MessageState::from(state)), state.as_str());
        }
        for kind in [
            PurgeTargetKind::SessionDir,
            PurgeTargetKind::Backups,
            PurgeTargetKind::Outbox,
            PurgeTargetKind::MessageStatuses,
        ] {
            assert_eq!(name(RemovedKind::from(kind)), kind.as_str());
        }
        for outcome in [
            HookOutcome::Ok,
            HookOutcome::Vetoed("v".into()),
            HookOutcome::Failed("f".into()),
            HookOutcome::TimedOut,
            HookOutcome::Skipped("s".into()),
        ] {
            assert_eq!(name(HookOutcomeName::from(&outcome)), outcome.as_str());
        }
    }
}
