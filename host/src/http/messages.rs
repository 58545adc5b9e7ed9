//! A session's messages: `POST /api/sessions/{phone}/messages` queues one
//! in the durable outbox, `GET …/messages/{id}` says what became of it,
//! `GET …/outbox` lists those still pending; with their bodies.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use super::extract::{ApiJson, AuthCaller, MessagePath, PhoneAndMessageId, PhoneParam, PhonePath};
use super::json::{
    ErrorBody, StringOrNumber, Success, json_response, string_or_phone_number_schema,
};
use super::responses::{BadPhone, HostFailed, NoSession, NoToken, SessionTimeout};
use super::{ApiError, AppState};
use crate::core::message_status::{DeliveryState, MessageStatus};
use crate::core::outbox::OutboxMessage;

/// Queues a text message durably (202 once its line in the outbox log is synced).
#[utoipa::path(
    post, path = "/api/sessions/{phone}/messages", tag = "messages",
    security(("bearer" = [])),
    params(PhonePath),
    request_body = SendMessageRequest,
    responses(
        (status = 202, description = "Queued: the message is in the durable outbox", body = Success<EnqueuedBody>,
            links(
                ("status" = (operation_id = "message_status",
                    parameters(("phone" = "$request.path.phone"), ("id" = "$response.body#/id")))),
            )),
        (status = 400, description = "An invalid phone, recipient or text, or a body that is not JSON", body = ErrorBody),
        (status = 413, description = "The message is larger than a phone's outbox may hold at all", body = ErrorBody),
        (status = 429, description = "The phone's or the account's outbox is full (messages or bytes; the sentence says which): retry once messages have left", body = ErrorBody),
        NoToken, NoSession, HostFailed, SessionTimeout,
    )
)]
pub async fn enqueue_message(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
    ApiJson(body): ApiJson<SendMessageRequest>,
) -> Result<Response, ApiError> {
    let (to, text) = body.into_parts()?;
    let message = state
        .gateway
        .lookup(&phone)?
        .enqueue(caller, to, text)
        .await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &Success::new(EnqueuedBody::from(&message)),
    ))
}

/// What became of a message: queued, sent, delivered, read or failed.
#[utoipa::path(
    get, path = "/api/sessions/{phone}/messages/{id}", tag = "messages",
    security(("bearer" = [])),
    params(MessagePath),
    responses(
        (status = 200, description = "The message's status", body = Success<MessageStatusBody>),
        (status = 400, description = "The phone or the message id in the path is malformed", body = ErrorBody),
        (status = 404, description = "No such session for this caller, or no such message", body = ErrorBody),
        NoToken, SessionTimeout,
    )
)]
pub async fn message_status(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneAndMessageId(phone, id): PhoneAndMessageId,
) -> Result<Success<MessageStatusBody>, ApiError> {
    let status = state
        .gateway
        .lookup(&phone)?
        .message_status(caller, id)
        .await?;
    Ok(Success::new(MessageStatusBody::from(status)))
}

/// Messages still pending, in the order they leave.
#[utoipa::path(
    get, path = "/api/sessions/{phone}/outbox", tag = "messages",
    security(("bearer" = [])),
    params(PhonePath),
    responses(
        (status = 200, description = "The pending messages", body = Success<OutboxBody>),
        BadPhone, NoToken, NoSession, SessionTimeout,
    )
)]
pub async fn outbox(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Success<OutboxBody>, ApiError> {
    let pending = state.gateway.lookup(&phone)?.outbox(caller).await?;
    Ok(Success::new(OutboxBody {
        count: pending.len(),
        pending: pending.iter().map(PendingMessageBody::from).collect(),
    }))
}

/// `POST /api/sessions/{phone}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendMessageRequest {
    /// The recipient: a phone (digits, as a string or a number) or a JID.
    #[schema(schema_with = recipient_schema, required = true)]
    pub to: Option<StringOrNumber>,
    /// The text; it must not be blank, and at most 65,536 bytes (UTF-8).
    #[schema(value_type = String, required = true, min_length = 1, max_length = 65536, pattern = "\\S", example = "hola")]
    pub text: Option<String>,
}

impl SendMessageRequest {
    /// The recipient and the text, both present; the session checks what they say.
    pub fn into_parts(self) -> Result<(String, String), ApiError> {
        let to = self
            .to
            .ok_or_else(|| ApiError::BadRequest("'to' is required".into()))?
            .into_string("to")?;
        let text = self
            .text
            .ok_or_else(|| ApiError::BadRequest("'text' is required".into()))?;
        Ok((to, text))
    }
}

/// The documented shape of a message's recipient, as `Recipient::parse`
/// takes it: a phone (digits, as a string or a JSON number), a user JID or a
/// group JID, with surrounding spaces ignored.
fn recipient_schema() -> impl Into<RefOr<Schema>> {
    string_or_phone_number_schema(
        RECIPIENT_PATTERN,
        "A phone (8 to 15 digits, as a string or a JSON number), a user JID (`{digits}@s.whatsapp.net`) or a group JID (`{digits}[-{digits}]@g.us`)",
        "51900000001",
    )
}

/// A recipient: a phone, a user JID or a group JID (`Recipient::parse`).
/// It may be stricter than the parser (a group JID of at most 40
/// characters in the usual two shapes), never looser: a test checks that
/// whatever it matches, the parser accepts.
pub const RECIPIENT_PATTERN: &str =
    r"^\s*([0-9]{8,15}(@s\.whatsapp\.net)?|[0-9]{1,20}(-[0-9]{1,19})?@g\.us)\s*$";

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl From<DeliveryState> for MessageState {
    fn from(state: DeliveryState) -> MessageState {
        match state {
            DeliveryState::Queued => MessageState::Queued,
            DeliveryState::Sent => MessageState::Sent,
            DeliveryState::Delivered => MessageState::Delivered,
            DeliveryState::Read => MessageState::Read,
            DeliveryState::Failed => MessageState::Failed,
        }
    }
}

/// `POST /api/sessions/{phone}/messages` (202): the message is in the durable outbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueuedBody {
    /// Also the WhatsApp message id.
    #[schema(example = "3EB0A1B2C3D4E5F6A7B8C9D0")]
    pub id: String,
    /// The recipient's JID.
    #[schema(example = "51900000001@s.whatsapp.net")]
    pub to: String,
    /// Always `queued`.
    pub status: MessageState,
}

impl From<&OutboxMessage> for EnqueuedBody {
    fn from(m: &OutboxMessage) -> EnqueuedBody {
        EnqueuedBody {
            id: m.id.clone(),
            to: m.to.as_jid().to_owned(),
            status: MessageState::Queued,
        }
    }
}

/// `GET /api/sessions/{phone}/messages/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageStatusBody {
    #[schema(example = "3EB0A1B2C3D4E5F6A7B8C9D0")]
    pub id: String,
    #[schema(example = "51900000001@s.whatsapp.net")]
    pub to: String,
    pub status: MessageState,
    /// Why it failed; only when `status` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false, example = "51900000009 is not on WhatsApp")]
    pub error: Option<String>,
    pub queued_at_ms: u64,
    pub sent_at_ms: Option<u64>,
    pub delivered_at_ms: Option<u64>,
    pub read_at_ms: Option<u64>,
    pub failed_at_ms: Option<u64>,
}

impl From<MessageStatus> for MessageStatusBody {
    fn from(s: MessageStatus) -> MessageStatusBody {
        MessageStatusBody {
            id: s.id,
            to: s.to,
            status: s.state.into(),
            error: s.error,
            queued_at_ms: s.queued_at_ms,
            sent_at_ms: s.sent_at_ms,
            delivered_at_ms: s.delivered_at_ms,
            read_at_ms: s.read_at_ms,
            failed_at_ms: s.failed_at_ms,
        }
    }
}

/// One message still in the outbox.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingMessageBody {
    #[schema(example = "3EB0A1B2C3D4E5F6A7B8C9D0")]
    pub id: String,
    #[schema(example = "51900000001@s.whatsapp.net")]
    pub to: String,
    #[schema(example = "hola")]
    pub text: String,
    pub created_at_ms: u64,
    /// Sends tried so far.
    pub attempts: u32,
}

impl From<&OutboxMessage> for PendingMessageBody {
    fn from(m: &OutboxMessage) -> PendingMessageBody {
        PendingMessageBody {
            id: m.id.clone(),
            to: m.to.as_jid().to_owned(),
            text: m.text.clone(),
            created_at_ms: m.created_at_ms,
            attempts: m.attempts,
        }
    }
}

/// `GET /api/sessions/{phone}/outbox`: pending messages, in the order they leave.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxBody {
    pub count: usize,
    pub pending: Vec<PendingMessageBody>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::outbox::Recipient;
    use crate::http::json::wire_name;
    use crate::http::sessions::PHONE_PATTERN;
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

    #[test]
    fn core_vocabularies_map_to_the_names_the_api_always_used() {
        for state in [
            DeliveryState::Queued,
            DeliveryState::Sent,
            DeliveryState::Delivered,
            DeliveryState::Read,
            DeliveryState::Failed,
        ] {
            assert_eq!(wire_name(MessageState::from(state)), state.as_str());
        }
    }
}
