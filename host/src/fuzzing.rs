//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay
//! test (`host/tests/fuzz_corpus.rs`), one per input the host takes from
//! outside: the phone in a path, the JWT in a header, the TOML config and
//! its `[plugins]` section, each on-disk format, the JSON request bodies,
//! and the URLs a plugin's `http-post` asks for.
//!
//! Each function takes arbitrary bytes and panics only when an invariant
//! breaks, so that a panic is a bug: beyond "no panic", a format that
//! decodes must survive being written and read back unchanged, and a parser
//! that accepts something must accept what it produced.

use std::path::Path;
use std::sync::OnceLock;

use crate::auth::JwtAuth;
use crate::cluster::proof::{Proofs, Signed};
use crate::core::outbox::{MAX_TEXT_BYTES, OutboxMessage, Recipient};
use crate::core::tenant::Caller;
use crate::core::tenant::TenantId;
use crate::http::ApiError;
use crate::http::messages::SendMessageRequest;
use crate::http::sessions::CreateSessionRequest;
use crate::phone::Phone;
use crate::plugins::compiled_cache;
use crate::storage::{contacts, message_status_file, outbox_file, phone_records};

/// A fuzz target: arbitrary bytes in, a panic only when an invariant breaks.
pub type FuzzTarget = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/fuzz_targets/{name}.rs` and the seed
/// corpus folders `fuzz/corpus/{name}/` call them.
pub const TARGETS: &[(&str, FuzzTarget)] = &[
    ("phone", phone),
    ("jwt", jwt),
    ("config_toml", config_toml),
    ("plugins_toml", plugins_toml),
    ("phone_record", phone_record),
    ("outbox", outbox),
    ("message_statuses", message_statuses),
    ("contacts", contacts),
    ("plugin_state", plugin_state),
    ("compiled_cache_header", compiled_cache_header),
    ("json_bodies", json_bodies),
    ("webhook_url", webhook_url),
    ("notify_payload", notify_payload),
    ("forward_proof", forward_proof),
];

/// A phone parses only as itself, and only when it is 8 to 15 ASCII digits.
pub fn phone(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let digits = raw.bytes().all(|b| b.is_ascii_digit());
    match Phone::parse(raw) {
        Ok(phone) => {
            assert!(digits && (8..=15).contains(&raw.len()), "accepted {raw:?}");
            assert_eq!(phone.as_str(), raw);
            assert_eq!(Phone::parse(phone.as_str()).as_ref(), Ok(&phone));
        }
        Err(_) => assert!(!digits || !(8..=15).contains(&raw.len()), "refused {raw:?}"),
    }
}

const FUZZ_SECRET: &[u8] = b"fuzzing-secret-of-32-bytes-or-so";

fn fuzz_auth() -> &'static JwtAuth {
    static AUTH: OnceLock<JwtAuth> = OnceLock::new();
    AUTH.get_or_init(|| match JwtAuth::new(FUZZ_SECRET) {
        Ok(auth) => auth,
        Err(e) => panic!("the fuzz secret is refused: {e}"),
    })
}

/// Any `Authorization` header is answered without a panic; and claims that
/// are correctly signed name an operator, a valid tenant, or nobody.
pub fn jwt(data: &[u8]) {
    let auth = fuzz_auth();
    let text = String::from_utf8_lossy(data);
    // As a raw header, and as a token: forged, truncated or garbage.
    let _ = auth.authenticate(Some(&text));
    let _ = auth.authenticate(Some(&format!("Bearer {text}")));
    // As claims, signed with the right key: only the claims decide.
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(key) = jsonwebtoken::EncodingKey::from_secret(FUZZ_SECRET) else {
        return;
    };
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let Ok(token) = jsonwebtoken::encode(&header, &claims, &key) else {
        return;
    };
    match auth.authenticate(Some(&format!("Bearer {token}"))) {
        Ok(Caller::Operator) => assert_eq!(claims["role"], "operator"),
        Ok(Caller::Tenant(tenant)) => {
            assert_ne!(claims["role"], "operator");
            assert!(TenantId::parse(tenant.as_str()).is_ok());
        }
        Err(_) => {}
    }
}

/// The main config file: parsed and checked like `lila serve` does, with
/// no environment.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = crate::config::parse_config_text(Path::new("lila.toml"), text) {
        let _ = crate::config::Config::from_parts(file, &|_| None);
    }
}

/// A `[plugins]` section on its own, as the plugin runtime re-reads it on
/// every reload.
pub fn plugins_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = toml::from_str::<crate::config::plugins::PluginsFile>(text) {
        let _ = crate::config::plugins::PluginsConfig::from_file(&file, Path::new("/etc/lila"));
    }
}

fn fuzz_phone() -> Phone {
    match Phone::parse("51987654321") {
        Ok(phone) => phone,
        Err(e) => panic!("the fuzz phone is refused: {e}"),
    }
}

/// Decodes `data` with `decode`; what decodes is written with `encode` and
/// must decode again to the same value.
fn round_trip<T: PartialEq + std::fmt::Debug, E: std::fmt::Display>(
    data: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Result<Option<Vec<u8>>, E>,
    empty: impl Fn(&T) -> bool,
) {
    let Ok(value) = decode(data) else {
        return;
    };
    match encode(&value) {
        Ok(Some(bytes)) => match decode(&bytes) {
            Ok(again) => assert_eq!(again, value, "changed by a write and a read"),
            Err(e) => panic!("what was written does not read back: {e}"),
        },
        Ok(None) => assert!(empty(&value), "a non-empty value was stored as no file"),
        Err(e) => panic!("a decoded value cannot be written: {e}"),
    }
}

pub fn phone_record(data: &[u8]) {
    let (path, phone) = (Path::new("phone.json"), fuzz_phone());
    round_trip(
        data,
        |bytes| phone_records::decode(path, &phone, bytes),
        |record| phone_records::encode_bytes(record).map(Some),
        |_| false,
    );
}

pub fn outbox(data: &[u8]) {
    let path = Path::new("outbox.json");
    round_trip(
        data,
        |bytes| outbox_file::decode(path, bytes),
        outbox_file::encode_bytes,
        |outbox| outbox.is_empty(),
    );
}

pub fn message_statuses(data: &[u8]) {
    let path = Path::new("status.json");
    round_trip(
        data,
        |bytes| message_status_file::decode(path, bytes),
        message_status_file::encode_bytes,
        |statuses| statuses.is_empty(),
    );
}

pub fn contacts(data: &[u8]) {
    let path = Path::new("contacts.json");
    round_trip(
        data,
        |bytes| contacts::decode(path, bytes),
        |contacts| contacts::encode_bytes(contacts).map(Some),
        |_| false,
    );
}

pub fn plugin_state(data: &[u8]) {
    round_trip(
        data,
        crate::plugins::state::decode_state,
        |entries| crate::plugins::state::encode_state(entries).map(Some),
        |_| false,
    );
}

/// A cache file is accepted only with its own header and checksum: a file
/// `store` would write is accepted whole, and any one changed byte is
/// refused (that check is what makes loading the payload sound).
pub fn compiled_cache_header(data: &[u8]) {
    let component = [0x5a; 32];
    let component_hex = hex::encode(component);
    let engine = [0xe7; 32];
    // As a file read from disk.
    if let Ok(payload) = compiled_cache::check_header(data, &component_hex, &engine) {
        let mut expected = compiled_cache::header(&component, &engine, payload);
        expected.extend_from_slice(payload);
        assert_eq!(expected, data, "accepted a file store would not write");
    }
    // As a payload: the file store writes, then that file with one byte
    // flipped at a position the input picks.
    let (flip, payload) = match data.split_first() {
        Some((flip, payload)) => (*flip as usize, payload),
        None => (0, data),
    };
    let mut file = compiled_cache::header(&component, &engine, payload);
    file.extend_from_slice(payload);
    match compiled_cache::check_header(&file, &component_hex, &engine) {
        Ok(read) => assert_eq!(read, payload),
        Err(reason) => panic!("refused a file store writes: {reason}"),
    }
    let at = flip * 7919 % file.len();
    file[at] ^= 0x01;
    assert!(
        compiled_cache::check_header(&file, &component_hex, &engine).is_err(),
        "accepted a file with byte {at} changed"
    );
}

/// A refusal of a request body is a 400 with a sentence, never anything else.
fn assert_bad_request(e: &ApiError, body: &str) {
    assert_eq!(e.status().as_u16(), 400, "{e} for {body:?}");
    assert!(!e.to_string().is_empty(), "an empty sentence for {body:?}");
}

/// The bodies of `POST /api/sessions` and `POST /api/sessions/{phone}/messages`,
/// read as the handlers read them: the JSON, then the fields, then what the
/// session checks before it queues a message. Anything refused is a 400;
/// anything accepted is a valid phone, tenant, recipient and text.
pub fn json_bodies(data: &[u8]) {
    let shown = String::from_utf8_lossy(data);
    if let Ok(body) = serde_json::from_slice::<CreateSessionRequest>(data) {
        match body.clone().into_parts(&Caller::Operator) {
            Ok((phone, owner)) => {
                assert_eq!(Phone::parse(phone.as_str()).as_ref(), Ok(&phone));
                if let Some(owner) = owner {
                    assert_eq!(TenantId::parse(owner.as_str()).as_ref(), Ok(&owner));
                }
            }
            Err(e) => assert_bad_request(&e, &shown),
        }
        // A tenant's token always creates the tenant's own session.
        if let Ok(tenant) = TenantId::parse("fuzz-tenant") {
            match body.into_parts(&Caller::Tenant(tenant.clone())) {
                Ok((_, owner)) => assert_eq!(owner, Some(tenant)),
                Err(e) => assert_bad_request(&e, &shown),
            }
        }
    }
    if let Ok(body) = serde_json::from_slice::<SendMessageRequest>(data) {
        let (to, text) = match body.into_parts() {
            Ok(parts) => parts,
            Err(e) => return assert_bad_request(&e, &shown),
        };
        let Ok(recipient) = Recipient::parse(&to) else {
            return;
        };
        let jid = recipient.as_jid();
        assert!(
            jid.ends_with("@s.whatsapp.net") || jid.ends_with("@g.us"),
            "recipient {jid:?} from {to:?}"
        );
        assert_eq!(Recipient::parse(jid).as_ref(), Ok(&recipient));
        if let Ok(message) = OutboxMessage::new("3EB0".into(), recipient, text, 0) {
            assert!(!message.text.trim().is_empty());
            assert!(message.text.len() <= MAX_TEXT_BYTES);
        }
    }
}

/// The allow-list entries `webhook_url` checks a URL against when its
/// input names none that parses.
const WEBHOOK_ALLOW_LIST: [&str; 3] = [
    "https://hooks.example.com/lila",
    "http://127.0.0.1:8080",
    "https://[::1]:9000/h/",
];

/// A URL a plugin's `http-post` asks for, checked against an allow-list
/// entry (the input's first line, when it is one; else each of
/// `WEBHOOK_ALLOW_LIST`). What the check allows must be what the HTTP
/// client will reach: the URL parsed the way `ureq` parses it (an
/// `http::Uri`) has the entry's scheme, host and port, no user part, and a
/// path under the entry's prefix with no dot segment and no encoded or
/// backslash separator; and the origin a log line names carries no path,
/// query or user part.
pub fn webhook_url(data: &[u8]) {
    use crate::config::capabilities::{AllowedUrl, Capabilities};
    let text = String::from_utf8_lossy(data);
    let (first, rest) = text.split_once('\n').unwrap_or(("", &text));
    let entries: Vec<AllowedUrl> = match AllowedUrl::parse(first) {
        Ok(entry) => vec![entry],
        Err(_) => WEBHOOK_ALLOW_LIST
            .iter()
            .filter_map(|raw| AllowedUrl::parse(raw).ok())
            .collect(),
    };
    let url = if entries.len() == 1 && AllowedUrl::parse(first).is_ok() {
        rest
    } else {
        &*text
    };
    let origin = Capabilities::origin_of(url);
    if let Some((_, authority)) = origin.split_once("://") {
        assert!(
            !authority.contains(['/', '?', '#', '@']),
            "the logged origin {origin:?} of {url:?} says more than the origin"
        );
    }
    for entry in entries {
        let capabilities = Capabilities {
            http_allow: vec![entry.clone()],
            ..Capabilities::default()
        };
        if let Err(denied) = capabilities.check_http(url) {
            assert!(denied.starts_with("denied:"), "{denied}");
            continue;
        }
        check_allowed_url(entry.as_str(), url);
    }
}

/// What `webhook_url` demands of a URL the allow-list entry `allowed` let through.
fn check_allowed_url(allowed: &str, url: &str) {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        // The client refuses it too: nothing is sent.
        return;
    };
    let Ok(entry) = allowed.parse::<ureq::http::Uri>() else {
        panic!("the allow-list entry {allowed:?} is not a URI the client reads");
    };
    let scheme = |u: &ureq::http::Uri| u.scheme_str().map(str::to_ascii_lowercase);
    let host = |u: &ureq::http::Uri| {
        u.host().map(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        })
    };
    let port = |u: &ureq::http::Uri| {
        u.port_u16().or(
            match u.scheme_str().map(str::to_ascii_lowercase).as_deref() {
                Some("http") => Some(80),
                Some("https") => Some(443),
                _ => None,
            },
        )
    };
    assert_eq!(
        scheme(&uri),
        scheme(&entry),
        "{url:?} allowed by {allowed:?}"
    );
    assert_eq!(host(&uri), host(&entry), "{url:?} allowed by {allowed:?}");
    assert_eq!(port(&uri), port(&entry), "{url:?} allowed by {allowed:?}");
    let authority = uri.authority().map_or("", |a| a.as_str());
    assert!(!authority.contains('@'), "{url:?} has a user part");
    let path = uri.path();
    let lowered = path.to_ascii_lowercase();
    assert!(
        !path.split('/').any(|s| s == ".." || s == "."),
        "{url:?} has a dot segment"
    );
    for disguised in ["%2e", "%2f", "%5c", "\\"] {
        assert!(!lowered.contains(disguised), "{url:?} has {disguised}");
    }
    let prefix = entry.path().trim_end_matches('/');
    assert!(
        prefix.is_empty()
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/')),
        "{url:?} is outside {allowed:?}"
    );
}

const FUZZ_CLUSTER_SECRET: &[u8] = b"fuzzing-cluster-secret-32-bytes!";

/// A NOTIFY payload as a node reads one off `lila_events` or `lila_reset`:
/// what someone with database access sends is never opened (no panic, and
/// a forgery is refused); what a node sealed opens to itself, once, on its
/// own channel only, and with any one byte changed it is refused.
pub fn notify_payload(data: &[u8]) {
    let proofs = Proofs::new(FUZZ_CLUSTER_SECRET);
    let text = String::from_utf8_lossy(data);
    for channel in [
        crate::cluster::events::CHANNEL,
        crate::cluster::reset::RESET_CHANNEL,
    ] {
        assert!(
            proofs.open(channel, &text).is_err(),
            "opened a forgery {text:?}"
        );
    }
    let sealed = proofs.seal(crate::cluster::events::CHANNEL, &text);
    assert!(
        proofs
            .open(crate::cluster::reset::RESET_CHANNEL, &sealed)
            .is_err()
    );
    let mut flipped = sealed.clone().into_bytes();
    let at = data.first().map_or(0, |b| usize::from(*b)) % flipped.len();
    flipped[at] = if flipped[at] == b'0' { b'1' } else { b'0' };
    if let Ok(flipped) = String::from_utf8(flipped) {
        assert!(
            proofs
                .open(crate::cluster::events::CHANNEL, &flipped)
                .is_err(),
            "opened a changed payload"
        );
    }
    assert_eq!(
        proofs
            .open(crate::cluster::events::CHANNEL, &sealed)
            .as_deref(),
        Ok(text.as_ref())
    );
    assert!(
        proofs
            .open(crate::cluster::events::CHANNEL, &sealed)
            .is_err()
    );
}

/// A forwarded request's proof as a node checks it: the input's lines are
/// the method, the path, the sender, the caller, the proof and the body.
/// A proof from the input is never accepted; one a node made holds for
/// exactly what it signed, once.
pub fn forward_proof(data: &[u8]) {
    let proofs = Proofs::new(FUZZ_CLUSTER_SECRET);
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(6, '\n');
    let mut next = || lines.next().unwrap_or_default();
    let (method, path_and_query, from, caller, proof, body) =
        (next(), next(), next(), next(), next(), next());
    let signed = Signed {
        method,
        path_and_query,
        from,
        caller,
        body: body.as_bytes(),
    };
    assert!(proofs.verify(&signed, proof).is_err(), "accepted {proof:?}");
    let made = proofs.sign(&signed);
    let other_body = format!("{body}.");
    let changed = Signed {
        body: other_body.as_bytes(),
        ..signed
    };
    assert!(proofs.verify(&changed, &made).is_err());
    let other_caller = format!("{caller}x");
    let changed = Signed {
        caller: &other_caller,
        ..signed
    };
    assert!(proofs.verify(&changed, &made).is_err());
    assert_eq!(proofs.verify(&signed, &made), Ok(()));
    assert!(proofs.verify(&signed, &made).is_err(), "a replay held");
}
