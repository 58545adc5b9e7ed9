//! The archive file: its name and its JSON content (format `lila.backup-archive.v1`).
//!
//! One file per reset, named `{tenant}-{phone}-{yyyymmddThhmmssZ}.json` after
//! the time the reset was requested. The content is everything the reset will
//! drop that can be restored or audited by hand: the pending outbox messages,
//! the session's metadata and file list, and (only when opted in) the
//! credential files' bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use time::OffsetDateTime;

use crate::{CredentialFile, ResetSnapshot};

/// Bumped whenever a field changes meaning, so restore tools can tell.
pub const FORMAT: &str = "lila.backup-archive.v1";

/// The most characters of the tenant id (or phone) kept in a name; the host caps names at 128.
const MAX_PART_IN_NAME: usize = 64;

/// `{tenant}-{phone}-{yyyymmddThhmmssZ}.json`, made of characters the host's
/// `write-archive` accepts whatever the tenant id contains.
pub fn archive_name(tenant: &str, phone: &str, requested_at_ms: u64) -> String {
    format!(
        "{}-{}-{}.json",
        name_part(tenant, "tenant"),
        name_part(phone, "phone"),
        compact_utc(requested_at_ms)
    )
}

/// Keeps ASCII letters, digits, `_` and `-`, replaces anything else with `_`
/// (so `../` cannot survive), drops leading separators (the host wants a name
/// to start with a letter or digit) and caps the length.
fn name_part(raw: &str, if_empty: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed: String = mapped
        .trim_start_matches(['-', '_'])
        .chars()
        .take(MAX_PART_IN_NAME)
        .collect();
    if trimmed.is_empty() {
        if_empty.to_owned()
    } else {
        trimmed
    }
}

fn utc(ms: u64) -> Option<OffsetDateTime> {
    let nanos = i128::from(ms).checked_mul(1_000_000)?;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// `20260501T194259Z`; the raw milliseconds for a clock past year 9999.
fn compact_utc(ms: u64) -> String {
    match utc(ms) {
        Some(t) => format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        None => format!("{ms}ms"),
    }
}

/// `2026-05-01T19:42:59.999Z`
pub fn rfc3339_utc(ms: u64) -> Option<String> {
    utc(ms).map(|t| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    })
}

/// What went into the archive about credentials, so a reader never has to
/// guess whether an empty list means "none existed" or "not asked for".
pub enum CredentialsPart<'a> {
    NotRequested,
    Included(&'a [CredentialFile]),
    /// Requested by the config, but the host refused or failed.
    Unavailable(&'a str),
}

#[derive(Serialize)]
struct ArchiveDocument<'a> {
    format: &'static str,
    reset_id: &'a str,
    tenant: &'a str,
    phone: &'a str,
    requested_at: Option<String>,
    requested_at_ms: u64,
    session: &'a crate::SessionState,
    session_files: &'a [crate::FileInfo],
    backup_count: u32,
    outbox: &'a [crate::OutboxMessage],
    credentials_included: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials_error: Option<&'a str>,
    credentials: Vec<ArchivedCredential<'a>>,
}

#[derive(Serialize)]
struct ArchivedCredential<'a> {
    path: &'a str,
    size: usize,
    base64: String,
}

/// The archive's bytes: pretty JSON, because a person restores from it by hand.
pub fn archive_bytes(
    reset: &ResetSnapshot,
    credentials: CredentialsPart<'_>,
) -> Result<Vec<u8>, serde_json::Error> {
    let (credentials_included, credentials_error, files) = match credentials {
        CredentialsPart::NotRequested => (false, None, &[][..]),
        CredentialsPart::Included(files) => (true, None, files),
        CredentialsPart::Unavailable(why) => (false, Some(why), &[][..]),
    };
    let document = ArchiveDocument {
        format: FORMAT,
        reset_id: &reset.reset_id,
        tenant: &reset.tenant,
        phone: &reset.phone,
        requested_at: rfc3339_utc(reset.requested_at_ms),
        requested_at_ms: reset.requested_at_ms,
        session: &reset.session,
        session_files: &reset.session_files,
        backup_count: reset.backup_count,
        outbox: &reset.outbox,
        credentials_included,
        credentials_error,
        credentials: files
            .iter()
            .map(|file| ArchivedCredential {
                path: &file.path,
                size: file.bytes.len(),
                base64: BASE64.encode(&file.bytes),
            })
            .collect(),
    };
    serde_json::to_vec_pretty(&document)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-05-01T19:42:59.999Z, computed with `date -u -d @1777664579`.
    const AT: u64 = 1_777_664_579_999;

    fn check_name(tenant: &str, phone: &str, expected: &str) {
        assert_eq!(archive_name(tenant, phone, AT), expected);
    }

    #[test]
    fn archive_is_named_by_tenant_phone_and_utc_time() {
        check_name(
            "acme",
            "5511999998888",
            "acme-5511999998888-20260501T194259Z.json",
        );
        check_name(
            "Acme-42_x",
            "5511999998888",
            "Acme-42_x-5511999998888-20260501T194259Z.json",
        );
    }

    #[test]
    fn hostile_tenant_ids_cannot_escape_or_break_the_name() {
        check_name(
            "../../etc",
            "5511999998888",
            "etc-5511999998888-20260501T194259Z.json",
        );
        check_name(
            "a/b\\c d",
            "5511999998888",
            "a_b_c_d-5511999998888-20260501T194259Z.json",
        );
        check_name(
            "ação",
            "5511999998888",
            "a__o-5511999998888-20260501T194259Z.json",
        );
        check_name(
            "",
            "5511999998888",
            "tenant-5511999998888-20260501T194259Z.json",
        );
        check_name(
            "...",
            "5511999998888",
            "tenant-5511999998888-20260501T194259Z.json",
        );
        let long = archive_name(&"t".repeat(500), "551199999888877", AT);
        assert!(long.len() <= 128, "{} bytes", long.len());
        assert!(long.starts_with(&"t".repeat(64)));
    }

    #[test]
    fn times_format_in_utc() {
        assert_eq!(compact_utc(0), "19700101T000000Z");
        assert_eq!(rfc3339_utc(AT).as_deref(), Some("2026-05-01T19:42:59.999Z"));
        assert_eq!(compact_utc(u64::MAX), format!("{}ms", u64::MAX));
        assert_eq!(rfc3339_utc(u64::MAX), None);
    }
}
