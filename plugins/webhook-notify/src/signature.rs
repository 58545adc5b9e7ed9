//! The webhook signature: HMAC-SHA256 of the exact body bytes under the
//! endpoint's secret, sent as `X-Lila-Signature: sha256=<lowercase hex>`, the
//! shape receivers of other gateways' webhooks already verify.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "X-Lila-Signature";

/// `sha256=<hex>` for `body` under `secret`.
pub fn signature_value(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", lowercase_hex(&hmac_sha256(secret, body)))
}

fn hmac_sha256(secret: &[u8], body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length (long ones are hashed first), so this
    // constructor cannot fail; the empty-key fallback is only there to avoid a panic path.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn lowercase_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4231_test_case_2() {
        assert_eq!(
            signature_value(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn key_longer_than_a_block_is_hashed_first() {
        // RFC 4231 test case 6: a 131-byte key of 0xaa.
        assert_eq!(
            signature_value(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "sha256=60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn matches_openssl_on_a_json_body() {
        // printf '%s' '{"event":"session.cleared"}' | openssl dgst -sha256 -hmac 'whsec_test'
        assert_eq!(
            signature_value(b"whsec_test", br#"{"event":"session.cleared"}"#),
            "sha256=25cc40652689a48d3743fc5ca745bb8a53176f896a0f47688876d6773eab65f3"
        );
    }
}
