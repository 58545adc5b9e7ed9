//! Proofs between the nodes of a cluster, made with the cluster secret
//! (`LILA_CLUSTER_SECRET`), which only the nodes know.
//!
//! - **Requests** one node sends another (a forwarded request, a listing)
//!   carry [`PROOF`]: `v1.{unix seconds}.{nonce}.{mac}`, an HMAC-SHA256
//!   over the method, the path and query, the sender, the caller the
//!   sender authenticated ([`CALLER`]) and the body's SHA-256. The caller's
//!   own token never leaves the node it was sent to: a row forged into
//!   `nodes` collects no token. A node accepts a request marked forwarded
//!   only with a valid proof no older (or newer) than [`WINDOW`], and each
//!   nonce once.
//! - **Notifications** (relayed events, resets asked through the
//!   database) are sealed: AES-256-CTR, then an HMAC-SHA256 over the
//!   channel, the time, the nonce and the ciphertext (encrypt-then-MAC),
//!   so a QR or pairing code is never in clear in the database, and a
//!   forged or replayed one is dropped.
//!
//! Keys: one for MACs and one for encryption, each an HMAC of the secret
//! with its own label.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::core::tenant::{Caller, TenantId};

type HmacSha256 = hmac::Hmac<Sha256>;
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// The header carrying a request's proof.
pub const PROOF: &str = "x-lila-proof";
/// The header naming the caller the sending node authenticated.
pub const CALLER: &str = "x-lila-caller";
/// The shortest cluster secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;
/// How far a proof's time may be from this node's clock.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("a request between nodes without a proof")]
    Missing,
    #[error("a proof that is not one")]
    Malformed,
    #[error("a proof made outside the accepted window of {}s", WINDOW.as_secs())]
    Stale,
    #[error("a proof already used")]
    Replayed,
    #[error("a proof not made with the cluster secret")]
    Invalid,
}

/// The cluster secret's keys, and the nonces seen within the window.
pub struct Proofs {
    mac_key: [u8; 32],
    encryption_key: [u8; 32],
    seen: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Proofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proofs(..)")
    }
}

/// The caller of a request another node forwarded, as that node
/// authenticated it and proved it: set on the request (an extension) once
/// its proof holds, in place of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenCaller(pub Caller);

/// What a request's proof covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    /// The sending node's id.
    pub from: &'a str,
    /// The caller, as [`caller_label`] writes it.
    pub caller: &'a str,
    pub body: &'a [u8],
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn nonce() -> [u8; 16] {
    let mut nonce = [0u8; 16];
    let _ = getrandom::fill(&mut nonce);
    nonce
}

fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// A caller as a proof names it: `operator` or `tenant:{id}`.
pub fn caller_label(caller: &Caller) -> String {
    match caller {
        Caller::Operator => "operator".into(),
        Caller::Tenant(tenant) => format!("tenant:{}", tenant.as_str()),
    }
}

/// The caller a [`caller_label`] names.
pub fn caller_from_label(label: &str) -> Option<Caller> {
    match label.strip_prefix("tenant:") {
        Some(tenant) => TenantId::parse(tenant).ok().map(Caller::Tenant),
        None => (label == "operator").then_some(Caller::Operator),
    }
}

impl Proofs {
    /// The proofs of the cluster whose secret is `secret`.
    pub fn new(secret: &[u8]) -> Proofs {
        Proofs {
            mac_key: derive(secret, b"lila cluster mac v1"),
            encryption_key: derive(secret, b"lila cluster encryption v1"),
            seen: Mutex::default(),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.mac_key)
            .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
        for part in parts {
            // Each part with its length, so no two inputs read alike.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    fn request_mac(&self, signed: &Signed<'_>, time: &str, nonce: &str) -> HmacSha256 {
        let body = Sha256::digest(signed.body);
        self.mac(&[
            b"request",
            signed.method.as_bytes(),
            signed.path_and_query.as_bytes(),
            signed.from.as_bytes(),
            signed.caller.as_bytes(),
            &body,
            time.as_bytes(),
            nonce.as_bytes(),
        ])
    }

    /// The proof for a request.
    pub fn sign(&self, signed: &Signed<'_>) -> String {
        let (time, nonce) = (now().to_string(), hex::encode(nonce()));
        let mac = self.request_mac(signed, &time, &nonce).finalize();
        format!("v1.{time}.{nonce}.{}", hex::encode(mac.into_bytes()))
    }

    /// Checks a request's `proof`: made with the secret, over `signed`,
    /// within the window, and not seen before.
    pub fn verify(&self, signed: &Signed<'_>, proof: &str) -> Result<(), ProofError> {
        let mut parts = proof.split('.');
        let (Some("v1"), Some(time), Some(nonce), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ProofError::Malformed);
        };
        let mac = hex::decode(mac).map_err(|_| ProofError::Malformed)?;
        self.request_mac(signed, time, nonce)
            .verify_slice(&mac)
            .map_err(|_| ProofError::Invalid)?;
        self.fresh(time, nonce)
    }

    /// Whether `time` is within the window and `nonce` new; remembers it.
    fn fresh(&self, time: &str, nonce: &str) -> Result<(), ProofError> {
        let time: u64 = time.parse().map_err(|_| ProofError::Malformed)?;
        let now = now();
        if time.abs_diff(now) > WINDOW.as_secs() {
            return Err(ProofError::Stale);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, t| t.abs_diff(now) <= WINDOW.as_secs());
        if seen.insert(nonce.to_owned(), time).is_some() {
            return Err(ProofError::Replayed);
        }
        Ok(())
    }

    /// `text`, encrypted and authenticated for `channel`:
    /// `v1.{time}.{nonce}.{ciphertext}.{mac}`, hex.
    pub fn seal(&self, channel: &str, text: &str) -> String {
        let (time, iv) = (now().to_string(), nonce());
        let mut data = text.as_bytes().to_vec();
        Aes256Ctr::new(&self.encryption_key.into(), &iv.into()).apply_keystream(&mut data);
        let nonce = hex::encode(iv);
        let cipher = hex::encode(&data);
        let mac = self.mac(&[
            b"sealed",
            channel.as_bytes(),
            time.as_bytes(),
            nonce.as_bytes(),
            cipher.as_bytes(),
        ]);
        format!(
            "v1.{time}.{nonce}.{cipher}.{}",
            hex::encode(mac.finalize().into_bytes())
        )
    }

    /// The text [`Proofs::seal`] sealed for `channel`, once: a payload not
    /// sealed with the secret, for another channel, outside the window or
    /// seen before is refused.
    pub fn open(&self, channel: &str, sealed: &str) -> Result<String, ProofError> {
        let mut parts = sealed.split('.');
        let (Some("v1"), Some(time), Some(nonce), Some(cipher), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ProofError::Malformed);
        };
        let mac = hex::decode(mac).map_err(|_| ProofError::Malformed)?;
        self.mac(&[
            b"sealed",
            channel.as_bytes(),
            time.as_bytes(),
            nonce.as_bytes(),
            cipher.as_bytes(),
        ])
        .verify_slice(&mac)
        .map_err(|_| ProofError::Invalid)?;
        let iv: [u8; 16] = hex::decode(nonce)
            .ok()
            .and_then(|iv| iv.try_into().ok())
            .ok_or(ProofError::Malformed)?;
        let mut data = hex::decode(cipher).map_err(|_| ProofError::Malformed)?;
        self.fresh(time, nonce)?;
        Aes256Ctr::new(&self.encryption_key.into(), &iv.into()).apply_keystream(&mut data);
        String::from_utf8(data).map_err(|_| ProofError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-cluster-secret-of-32-bytes-ok!";

    fn signed(body: &[u8]) -> Signed<'_> {
        Signed {
            method: "POST",
            path_and_query: "/api/sessions/5511999990001/messages",
            from: "node-a",
            caller: "tenant:acme",
            body,
        }
    }

    #[test]
    fn a_proof_holds_once_for_what_it_signs_and_only_with_the_secret() {
        let (ours, theirs) = (Proofs::new(SECRET), Proofs::new(&[7u8; 32]));
        let proof = ours.sign(&signed(b"{}"));
        assert_eq!(
            theirs.verify(&signed(b"{}"), &proof),
            Err(ProofError::Invalid)
        );
        assert_eq!(
            ours.verify(&signed(b"{\"x\":1}"), &proof),
            Err(ProofError::Invalid)
        );
        let other_caller = Signed {
            caller: "operator",
            ..signed(b"{}")
        };
        assert_eq!(ours.verify(&other_caller, &proof), Err(ProofError::Invalid));
        assert_eq!(ours.verify(&signed(b"{}"), &proof), Ok(()));
        assert_eq!(
            ours.verify(&signed(b"{}"), &proof),
            Err(ProofError::Replayed)
        );
        assert_eq!(
            ours.verify(&signed(b"{}"), "v1.1.2"),
            Err(ProofError::Malformed)
        );
    }

    #[test]
    fn an_old_proof_is_stale() {
        let proofs = Proofs::new(SECRET);
        let (time, nonce) = ((now() - 120).to_string(), "00".repeat(16));
        let mac = proofs.request_mac(&signed(b""), &time, &nonce).finalize();
        let proof = format!("v1.{time}.{nonce}.{}", hex::encode(mac.into_bytes()));
        assert_eq!(proofs.verify(&signed(b""), &proof), Err(ProofError::Stale));
    }

    #[test]
    fn a_sealed_payload_hides_its_text_and_opens_once_on_its_channel() {
        let (ours, theirs) = (Proofs::new(SECRET), Proofs::new(&[7u8; 32]));
        let text = r#"{"qr":"2@secret-qr-code"}"#;
        let sealed = ours.seal("lila_events", text);
        assert!(!sealed.contains("secret-qr-code"));
        assert_eq!(
            theirs.open("lila_events", &sealed),
            Err(ProofError::Invalid)
        );
        assert_eq!(ours.open("lila_resets", &sealed), Err(ProofError::Invalid));
        assert_eq!(ours.open("lila_events", text), Err(ProofError::Malformed));
        assert_eq!(ours.open("lila_events", &sealed).as_deref(), Ok(text));
        assert_eq!(ours.open("lila_events", &sealed), Err(ProofError::Replayed));
    }

    #[test]
    fn a_caller_reads_back_from_its_label() {
        for caller in [
            Caller::Operator,
            Caller::Tenant(TenantId::parse("acme").unwrap()),
        ] {
            assert_eq!(caller_from_label(&caller_label(&caller)), Some(caller));
        }
        assert_eq!(caller_from_label("someone"), None);
    }
}
