//! Whether this build of lila checks WhatsApp's certificate chain.
//!
//! whatsapp-rust verifies the chain a server presents in the Noise handshake
//! against WhatsApp's root key, unless it was compiled with its
//! `danger-skip-cert-chain-verify` feature, which the simulator's chain needs.
//! Cargo unifies features across whatever it builds at once, so the answer
//! depends on the build command as much as on lila's own manifest. This
//! module does not trust either: it asks the linked library itself, once, by
//! handing the very function the handshake calls a chain whose signatures are
//! zeros. A library that checks refuses it; one that accepts it accepts
//! anything, and whoever sits between lila and WhatsApp can read its traffic.

use std::sync::LazyLock;

use whatsapp_rust::buffa::{Message as _, MessageField};
use whatsapp_rust::wacore::handshake::HandshakeUtils;
use whatsapp_rust::waproto::whatsapp as wa;

/// Whether the WhatsApp client linked into this binary verifies the server's
/// certificate chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateCheck {
    /// A chain must be signed by WhatsApp's root key (every user's build).
    On,
    /// Any well-formed chain is accepted: a build for the simulator. Safe
    /// only against a server on this machine (see `config::Config::check_trust`).
    Off,
}

impl CertificateCheck {
    pub fn is_on(self) -> bool {
        self == CertificateCheck::On
    }

    /// `on` or `off`, for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateCheck::On => "on",
            CertificateCheck::Off => "off",
        }
    }
}

/// This binary's answer, probed once per process.
pub fn certificate_check() -> CertificateCheck {
    static PROBED: LazyLock<CertificateCheck> = LazyLock::new(probe);
    *PROBED
}

/// Offers the handshake's own verification an unsigned chain that is
/// otherwise exactly what a server sends (an intermediate issued by serial 0,
/// a leaf issued by it naming the server's static key).
fn probe() -> CertificateCheck {
    use wa::cert_chain::{NoiseCertificate, noise_certificate::Details};
    let static_key = [0x42u8; 32];
    let details = |serial: u32, issuer_serial: u32, key: Vec<u8>| Details {
        serial: Some(serial),
        issuer_serial: Some(issuer_serial),
        key: Some(key),
        not_before: Some(0),
        not_after: Some(u64::from(u32::MAX)),
    };
    let unsigned = |details: Details| NoiseCertificate {
        details: Some(details.encode_to_vec()),
        signature: Some(vec![0u8; 64]),
    };
    let chain = wa::CertChain {
        intermediate: MessageField::some(unsigned(details(1, 0, vec![0x24u8; 32]))),
        leaf: MessageField::some(unsigned(details(2, 1, static_key.to_vec()))),
    };
    match HandshakeUtils::verify_server_cert(&chain.encode_to_vec(), &static_key) {
        Ok(_) => CertificateCheck::Off,
        Err(_) => CertificateCheck::On,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's unit tests link the simulator's build of whatsapp-rust (the
    /// `simulator` feature, through lila's dev-dependency on itself), so the
    /// probe must see the check off here; `tests/release/certificate-check.sh`
    /// shows it on in a plain `cargo build --release`.
    #[test]
    fn a_test_build_knows_it_skips_the_check() {
        assert_eq!(certificate_check(), CertificateCheck::Off);
    }
}
