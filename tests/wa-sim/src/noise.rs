//! The responder side of WhatsApp's Noise handshake (XX, IK and XXfallback) and the
//! encrypted, length-prefixed frame stream that follows it.
//!
//! Only the building blocks `wacore` exports are used (`NoiseHandshake`, `NoiseCipher`,
//! `FrameDecoder`, `encode_frame`); this module supplies the server's half of the
//! transcript, mirroring what the client's `XxHandshakeState` / `IkHandshakeState` do.

use whatsapp_rust::buffa::{Message as _, MessageField};
use whatsapp_rust::wacore::framing::{FrameDecoder, encode_frame};
use whatsapp_rust::wacore::handshake::NoiseHandshake;
use whatsapp_rust::wacore::libsignal::protocol::KeyPair;
use whatsapp_rust::wacore::noise::NoiseCipher;
use whatsapp_rust::wacore_binary::consts::{
    NOISE_PATTERN_IK, NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK, WA_CONN_HEADER,
};
use whatsapp_rust::waproto::whatsapp as wa;

use crate::error::SimError;

/// The simulator's long-lived Noise identity plus the certificate chain it presents.
///
/// The chain is structurally what WhatsApp's servers send (an intermediate issued by
/// serial 0, a leaf issued by the intermediate whose key is our static key), but its
/// signatures are not made with WhatsApp's root key, which nobody outside WhatsApp
/// has. Clients therefore only accept it when built with
/// `danger-skip-cert-chain-verify`.
pub struct ServerIdentity {
    static_key: KeyPair,
    cert_chain: Vec<u8>,
}

impl ServerIdentity {
    pub fn generate() -> Self {
        let static_key = KeyPair::generate(&mut rand::rng());
        let cert_chain = build_cert_chain(&static_key);
        Self {
            static_key,
            cert_chain,
        }
    }

    fn static_public(&self) -> &[u8] {
        self.static_key.public_key.public_key_bytes()
    }

    fn static_private(&self) -> [u8; 32] {
        *self.static_key.private_key.serialize()
    }
}

/// A certificate chain valid from a day ago for ten years, so a client's
/// `select_pattern` clock checks keep choosing IK on reconnect.
fn build_cert_chain(static_key: &KeyPair) -> Vec<u8> {
    use wa::cert_chain::{NoiseCertificate, noise_certificate::Details};
    let now = whatsapp_rust::wacore::time::now_secs() as u64;
    let not_before = now.saturating_sub(86_400);
    let not_after = now + 10 * 365 * 86_400;
    // The intermediate's key is a real X25519 key so the chain is well formed, even
    // though its signature over the leaf cannot be verified against WhatsApp's root.
    let intermediate_key = KeyPair::generate(&mut rand::rng());
    let intermediate_details = Details {
        serial: Some(1),
        issuer_serial: Some(0),
        key: Some(intermediate_key.public_key.public_key_bytes().to_vec()),
        not_before: Some(not_before),
        not_after: Some(not_after),
    }
    .encode_to_vec();
    let leaf_details = Details {
        serial: Some(2),
        issuer_serial: Some(1),
        key: Some(static_key.public_key.public_key_bytes().to_vec()),
        not_before: Some(not_before),
        not_after: Some(not_after),
    }
    .encode_to_vec();
    let leaf_signature = intermediate_key
        .private_key
        .calculate_signature(&leaf_details, &mut rand::rng())
        .map(|s| s.to_vec())
        .unwrap_or_else(|_| vec![0u8; 64]);
    wa::CertChain {
        intermediate: MessageField::some(NoiseCertificate {
            details: Some(intermediate_details),
            signature: Some(vec![0u8; 64]),
        }),
        leaf: MessageField::some(NoiseCertificate {
            details: Some(leaf_details),
            signature: Some(leaf_signature),
        }),
    }
    .encode_to_vec()
}

/// Where handshake frames come from and go to (the WebSocket, in production).
pub trait FrameIo {
    fn recv_frame(&mut self) -> impl Future<Output = Result<Vec<u8>, SimError>> + Send;
    fn send_frame(&mut self, payload: &[u8]) -> impl Future<Output = Result<(), SimError>> + Send;
}

/// What a finished handshake yields: the transport ciphers, the client's static
/// Noise key and its decoded `ClientPayload` (login or registration).
pub struct Established {
    pub ciphers: TransportCiphers,
    pub client_static: [u8; 32],
    pub payload: wa::ClientPayload,
    pub pattern: HandshakeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    Xx,
    Ik,
    XxFallback,
}

/// The two directions of the post-handshake channel with their frame counters.
pub struct TransportCiphers {
    read: NoiseCipher,
    write: NoiseCipher,
    read_counter: u32,
    write_counter: u32,
}

impl TransportCiphers {
    fn from_split(initiator_write: NoiseCipher, initiator_read: NoiseCipher) -> Self {
        // `finish()` names the keys from the initiator's point of view; the
        // responder reads what the initiator writes.
        Self {
            read: initiator_write,
            write: initiator_read,
            read_counter: 0,
            write_counter: 0,
        }
    }

    pub fn decrypt(&mut self, mut frame: Vec<u8>) -> Result<Vec<u8>, SimError> {
        self.read
            .decrypt_in_place_with_counter(self.read_counter, &mut frame)
            .map_err(|e| SimError::Protocol(format!("frame decrypt failed: {e}")))?;
        self.read_counter = self.read_counter.wrapping_add(1);
        Ok(frame)
    }

    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SimError> {
        let out = self
            .write
            .encrypt_with_counter(self.write_counter, plaintext)
            .map_err(|e| SimError::Protocol(format!("frame encrypt failed: {e}")))?;
        self.write_counter = self.write_counter.wrapping_add(1);
        Ok(out)
    }
}

fn proto_err(context: &str, e: impl std::fmt::Display) -> SimError {
    SimError::Protocol(format!("{context}: {e}"))
}

fn key32(bytes: &[u8], what: &str) -> Result<[u8; 32], SimError> {
    bytes
        .try_into()
        .map_err(|_| SimError::Protocol(format!("{what} is not 32 bytes")))
}

/// Runs the server side of the handshake on an established frame stream.
pub async fn accept<T: FrameIo>(
    io: &mut T,
    identity: &ServerIdentity,
) -> Result<Established, SimError> {
    let hello_bytes = io.recv_frame().await?;
    let hello = wa::HandshakeMessage::decode_from_slice(&hello_bytes)
        .map_err(|e| proto_err("client hello", e))?;
    let client_hello = hello
        .client_hello
        .into_option()
        .ok_or_else(|| SimError::Protocol("first frame is not a client hello".into()))?;
    let client_ephemeral = key32(
        client_hello.ephemeral.as_deref().unwrap_or_default(),
        "client ephemeral",
    )?;

    match (client_hello.r#static, client_hello.payload) {
        (Some(encrypted_static), Some(encrypted_payload)) => {
            match ik_accept(
                io,
                identity,
                &client_ephemeral,
                &encrypted_static,
                &encrypted_payload,
            )
            .await?
            {
                Some(done) => Ok(done),
                // The client's cached static key is not ours (e.g. the simulator
                // restarted): answer with an XX-shaped hello so it falls back.
                None => xx_accept(io, identity, &client_ephemeral, HandshakeKind::XxFallback).await,
            }
        }
        _ => xx_accept(io, identity, &client_ephemeral, HandshakeKind::Xx).await,
    }
}

async fn xx_accept<T: FrameIo>(
    io: &mut T,
    identity: &ServerIdentity,
    client_ephemeral: &[u8; 32],
    kind: HandshakeKind,
) -> Result<Established, SimError> {
    let pattern = match kind {
        HandshakeKind::XxFallback => NOISE_PATTERN_XXFALLBACK,
        _ => NOISE_PATTERN_XX,
    };
    let mut noise =
        NoiseHandshake::new(pattern, &WA_CONN_HEADER).map_err(|e| proto_err("noise", e))?;
    noise.authenticate(client_ephemeral);

    let ephemeral = KeyPair::generate(&mut rand::rng());
    let ephemeral_public = ephemeral.public_key.public_key_bytes().to_vec();
    noise.authenticate(&ephemeral_public);
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), client_ephemeral)
        .map_err(|e| proto_err("ee", e))?;
    let encrypted_static = noise
        .encrypt(identity.static_public())
        .map_err(|e| proto_err("encrypt static", e))?;
    noise
        .mix_shared_secret(&identity.static_private(), client_ephemeral)
        .map_err(|e| proto_err("es", e))?;
    let encrypted_cert = noise
        .encrypt(&identity.cert_chain)
        .map_err(|e| proto_err("encrypt cert", e))?;

    let server_hello = wa::HandshakeMessage {
        server_hello: MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral_public),
            r#static: Some(encrypted_static),
            payload: Some(encrypted_cert),
            ..Default::default()
        }),
        ..Default::default()
    };
    io.send_frame(&server_hello.encode_to_vec()).await?;

    let finish_bytes = io.recv_frame().await?;
    let finish = wa::HandshakeMessage::decode_from_slice(&finish_bytes)
        .map_err(|e| proto_err("client finish", e))?;
    let client_finish = finish
        .client_finish
        .into_option()
        .ok_or_else(|| SimError::Protocol("expected a client finish".into()))?;
    let client_static = noise
        .decrypt(client_finish.r#static.as_deref().unwrap_or_default())
        .map_err(|e| proto_err("decrypt client static", e))?;
    let client_static = key32(&client_static, "client static")?;
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_static)
        .map_err(|e| proto_err("se", e))?;
    let payload_bytes = noise
        .decrypt(client_finish.payload.as_deref().unwrap_or_default())
        .map_err(|e| proto_err("decrypt client payload", e))?;
    let payload = wa::ClientPayload::decode_from_slice(&payload_bytes)
        .map_err(|e| proto_err("client payload", e))?;
    let (write, read) = noise.finish().map_err(|e| proto_err("split", e))?;
    Ok(Established {
        ciphers: TransportCiphers::from_split(write, read),
        client_static,
        payload,
        pattern: kind,
    })
}

/// Returns `Ok(None)` when the client addressed a static key that is not ours.
async fn ik_accept<T: FrameIo>(
    io: &mut T,
    identity: &ServerIdentity,
    client_ephemeral: &[u8; 32],
    encrypted_static: &[u8],
    encrypted_payload: &[u8],
) -> Result<Option<Established>, SimError> {
    let mut noise = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER)
        .map_err(|e| proto_err("noise", e))?;
    noise.authenticate(identity.static_public());
    noise.authenticate(client_ephemeral);
    noise
        .mix_shared_secret(&identity.static_private(), client_ephemeral)
        .map_err(|e| proto_err("es", e))?;
    let Ok(client_static) = noise.decrypt(encrypted_static) else {
        return Ok(None);
    };
    let client_static = key32(&client_static, "client static")?;
    noise
        .mix_shared_secret(&identity.static_private(), &client_static)
        .map_err(|e| proto_err("ss", e))?;
    let payload_bytes = noise
        .decrypt(encrypted_payload)
        .map_err(|e| proto_err("decrypt client payload", e))?;
    let payload = wa::ClientPayload::decode_from_slice(&payload_bytes)
        .map_err(|e| proto_err("client payload", e))?;

    let ephemeral = KeyPair::generate(&mut rand::rng());
    let ephemeral_public = ephemeral.public_key.public_key_bytes().to_vec();
    noise.authenticate(&ephemeral_public);
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), client_ephemeral)
        .map_err(|e| proto_err("ee", e))?;
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_static)
        .map_err(|e| proto_err("se", e))?;
    let encrypted_cert = noise
        .encrypt(&identity.cert_chain)
        .map_err(|e| proto_err("encrypt cert", e))?;
    let server_hello = wa::HandshakeMessage {
        server_hello: MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral_public),
            r#static: None,
            payload: Some(encrypted_cert),
            ..Default::default()
        }),
        ..Default::default()
    };
    io.send_frame(&server_hello.encode_to_vec()).await?;
    let (write, read) = noise.finish().map_err(|e| proto_err("split", e))?;
    Ok(Some(Established {
        ciphers: TransportCiphers::from_split(write, read),
        client_static,
        payload,
        pattern: HandshakeKind::Ik,
    }))
}

/// Splits the byte stream of one connection into frames, first removing the
/// connection prologue (optional edge-routing pre-intro, then `WA` header).
#[derive(Default)]
pub struct FrameReader {
    decoder: FrameDecoder,
    prologue_seen: bool,
    pending: Vec<u8>,
}

impl FrameReader {
    pub fn new() -> Self {
        Self {
            decoder: FrameDecoder::new(),
            prologue_seen: false,
            pending: Vec::new(),
        }
    }

    /// Feeds bytes; returns an error only for a prologue that is not WhatsApp's.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), SimError> {
        if self.prologue_seen {
            self.decoder.feed(data);
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        let mut start = 0;
        if self.pending.starts_with(b"ED") {
            if self.pending.len() < 7 {
                return Ok(());
            }
            let len = (usize::from(self.pending[4]) << 16)
                | (usize::from(self.pending[5]) << 8)
                | usize::from(self.pending[6]);
            start = 7 + len;
        }
        if self.pending.len() < start + WA_CONN_HEADER.len() {
            return Ok(());
        }
        if self.pending[start..start + 2] != WA_CONN_HEADER[..2] {
            return Err(SimError::Protocol(
                "connection does not start with the WA header".into(),
            ));
        }
        // The header's last byte is the binary dictionary's version: a
        // client with another one could not read a single stanza.
        let dictionary = self.pending[start + 3];
        if dictionary != WA_CONN_HEADER[3] {
            return Err(SimError::UnsupportedDictionary {
                client: dictionary,
                ours: WA_CONN_HEADER[3],
            });
        }
        self.prologue_seen = true;
        let rest = self.pending.split_off(start + WA_CONN_HEADER.len());
        self.pending.clear();
        self.decoder.feed(&rest);
        Ok(())
    }

    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        self.decoder.decode_frame().map(|b| b.to_vec())
    }
}

/// Prefixes a payload with its 3-byte length.
pub fn frame(payload: &[u8]) -> Result<Vec<u8>, SimError> {
    encode_frame(payload, None).map_err(|e| proto_err("frame", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_with_another_dictionary_version_is_refused_by_its_header() {
        let mut header = WA_CONN_HEADER;
        header[3] = header[3].wrapping_add(1);
        let mut reader = FrameReader::new();
        match reader.feed(&header) {
            Err(SimError::UnsupportedDictionary { client, ours }) => {
                assert_eq!((client, ours), (header[3], WA_CONN_HEADER[3]))
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(FrameReader::new().feed(&WA_CONN_HEADER).is_ok());
    }

    #[test]
    fn the_prologue_is_stripped_before_frames_even_when_split() {
        let mut bytes = b"ED\x00\x01\x00\x00\x02hi".to_vec();
        bytes.extend_from_slice(&WA_CONN_HEADER);
        bytes.extend(frame(b"hello").unwrap());
        bytes.extend(frame(b"world").unwrap());
        let mut reader = FrameReader::new();
        for chunk in bytes.chunks(3) {
            reader.feed(chunk).unwrap();
        }
        assert_eq!(reader.next_frame().as_deref(), Some(&b"hello"[..]));
        assert_eq!(reader.next_frame().as_deref(), Some(&b"world"[..]));
        assert_eq!(reader.next_frame(), None);
    }

    #[test]
    fn a_stream_without_the_wa_header_is_refused() {
        let mut reader = FrameReader::new();
        assert!(reader.feed(b"GET / HTTP/1.1").is_err());
    }
}
