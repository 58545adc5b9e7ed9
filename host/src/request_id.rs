//! The id of the HTTP request being served: made (or taken from the
//! client's `x-request-id`) by the HTTP layer, carried to the session actor
//! with each command, so the actor's log lines for that request carry it too.

use std::fmt;
use std::future::Future;

/// The header a client may send, and that every response carries.
pub const HEADER: &str = "x-request-id";

/// The longest id accepted from a client.
const MAX_LEN: usize = 64;

tokio::task_local! {
    /// The request the current task is serving (set around each request).
    static CURRENT: RequestId;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A client's id, if it is sane: 1–64 ASCII letters, digits, `-`, `_`
    /// or `.`. Anything else (spaces, quotes, control characters) could
    /// forge or break log lines, so a new id is made instead.
    pub fn from_client(raw: &str) -> Option<RequestId> {
        let sane = !raw.is_empty()
            && raw.len() <= MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        sane.then(|| RequestId(raw.to_owned()))
    }

    /// A new id: 16 hex characters.
    pub fn generate() -> RequestId {
        let mut raw = [0u8; 8];
        if getrandom::fill(&mut raw).is_err() {
            // The OS generator does not fail on supported platforms; a
            // clock-derived id still tells requests apart in a log.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            raw = nanos.to_le_bytes();
        }
        RequestId(hex::encode(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the request the current task is serving, if any.
    pub fn current() -> Option<RequestId> {
        CURRENT.try_with(RequestId::clone).ok()
    }

    /// Runs `future` as the serving of request `self`.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_is_refused() {
        assert_eq!(
            RequestId::from_client("portal-7f3a.42_b").map(|r| r.0),
            Some("portal-7f3a.42_b".to_owned())
        );
        for bad in [
            "",
            "has space",
            "quote\"",
            "new\nline",
            "ü",
            &"a".repeat(65),
        ] {
            assert_eq!(RequestId::from_client(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_16_hex_characters_and_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn the_current_id_is_seen_only_inside_its_scope() {
        assert_eq!(RequestId::current(), None);
        let id = RequestId::generate();
        let seen = id.clone().scope(async { RequestId::current() }).await;
        assert_eq!(seen, Some(id));
    }
}
