//! Media as WhatsApp's CDN holds it: the sender encrypts the file with a random
//! media key (HKDF-SHA256 expanded with the media type's info string into an
//! IV, an AES-256-CBC key and an HMAC-SHA256 key; the first 10 bytes of the MAC
//! over IV and ciphertext are appended), the CDN serves the encrypted file at
//! its direct path, and the message carries the key and both hashes.
//!
//! The client builds download URLs as `https://{host}{direct_path}?auth=..&token=..`
//! from the hosts of the `media_conn` IQ, which the simulator answers with its
//! own address. The simulator serves plain HTTP, so a client in a test is given
//! [`LoopbackMediaHttpClient`], which sends exactly those URLs for the
//! simulator's address over `http://` (and every other URL unchanged).

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::prelude::BASE64_URL_SAFE_NO_PAD;
use serde::Deserialize;
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::wacore::libsignal::crypto::{
    CryptographicHash, aes_256_cbc_encrypt_into, hmac_sha256,
};
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;

use crate::SimControl;
use crate::error::SimError;

/// The kinds of media a contact can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    /// The HKDF info string the media key is expanded with.
    fn hkdf_info(self) -> &'static [u8] {
        match self {
            MediaKind::Image | MediaKind::Sticker => b"WhatsApp Image Keys",
            MediaKind::Video => b"WhatsApp Video Keys",
            MediaKind::Audio => b"WhatsApp Audio Keys",
            MediaKind::Document => b"WhatsApp Document Keys",
        }
    }

    /// The CDN's path segment for this kind.
    fn path_segment(self) -> &'static str {
        match self {
            MediaKind::Image | MediaKind::Sticker => "t62.7118-24",
            MediaKind::Video => "t62.7161-24",
            MediaKind::Audio => "t62.7117-24",
            MediaKind::Document => "t62.7119-24",
        }
    }
}

/// What the message carries about an uploaded file.
#[derive(Clone, Debug)]
pub struct Uploaded {
    pub direct_path: String,
    pub url: String,
    pub media_key: Vec<u8>,
    pub file_sha256: Vec<u8>,
    pub file_enc_sha256: Vec<u8>,
    pub file_length: u64,
    pub media_key_timestamp: i64,
}

pub fn sha256(data: &[u8]) -> Result<Vec<u8>, SimError> {
    let mut hash =
        CryptographicHash::new("SHA-256").map_err(|e| SimError::Signal(e.to_string()))?;
    hash.update(data);
    Ok(hash.finalize())
}

/// What a media key expands to.
struct MediaKeys {
    iv: [u8; 16],
    cipher_key: [u8; 32],
    mac_key: [u8; 32],
}

fn expand(media_key: &[u8], kind: MediaKind) -> Result<MediaKeys, SimError> {
    let expanded =
        whatsapp_rust::wacore::crypto::hkdf_sha256(media_key, 112, None, kind.hkdf_info())
            .map_err(|e| SimError::Signal(format!("hkdf: {e}")))?;
    let bad = |_| SimError::Signal("hkdf output".into());
    Ok(MediaKeys {
        iv: expanded[0..16].try_into().map_err(bad)?,
        cipher_key: expanded[16..48].try_into().map_err(bad)?,
        mac_key: expanded[48..80].try_into().map_err(bad)?,
    })
}

/// Encrypts `data` with `media_key`: ciphertext followed by the 10-byte MAC.
pub fn encrypt(media_key: &[u8], kind: MediaKind, data: &[u8]) -> Result<Vec<u8>, SimError> {
    let keys = expand(media_key, kind)?;
    let mut file = Vec::with_capacity(data.len() + 32);
    aes_256_cbc_encrypt_into(data, &keys.cipher_key, &keys.iv, &mut file)
        .map_err(|e| SimError::Signal(format!("aes-cbc: {e}")))?;
    let mac = hmac_sha256(&keys.mac_key, &[keys.iv.as_slice(), &file].concat());
    file.extend_from_slice(&mac[..10]);
    Ok(file)
}

/// Encrypts `data` under a fresh media key and stores the file where the
/// simulator's media endpoint serves it.
pub fn upload(control: &SimControl, kind: MediaKind, data: &[u8]) -> Result<Uploaded, SimError> {
    let media_key: [u8; 32] = rand::random();
    let file = encrypt(&media_key, kind, data)?;
    let file_enc_sha256 = sha256(&file)?;
    let direct_path = format!(
        "/v/{}/{}_{}_n.enc",
        kind.path_segment(),
        rand::random::<u32>(),
        crate::stanza::random_token(24).to_lowercase()
    );
    let url = format!("https://{}{direct_path}", control.shared.addr);
    control.shared.with_world(|w| {
        w.media.insert(direct_path.clone(), file);
    });
    Ok(Uploaded {
        direct_path,
        url,
        media_key: media_key.to_vec(),
        file_sha256: sha256(data)?,
        file_enc_sha256,
        file_length: data.len() as u64,
        media_key_timestamp: crate::stanza::now_secs() as i64,
    })
}

/// The `<media_conn>` answer: one host, the simulator's own address.
pub fn media_conn(control_addr: std::net::SocketAddr, auth: &str) -> Node {
    NodeBuilder::new("media_conn")
        .attrs([
            ("auth", auth.to_string()),
            ("ttl", "21600".to_string()),
            ("auth_ttl", "21600".to_string()),
            ("max_buckets", "12".to_string()),
        ])
        .children([NodeBuilder::new("host")
            .attrs([
                ("hostname", control_addr.to_string()),
                ("type", "primary".to_string()),
            ])
            .build()])
        .build()
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    auth: Option<String>,
    token: Option<String>,
}

/// `GET /v/...`: the encrypted file, when the token names it (and the auth
/// token, when given, is the one `media_conn` handed out).
pub async fn download(
    State(control): State<SimControl>,
    Path(rest): Path<String>,
    Query(query): Query<DownloadQuery>,
) -> Response {
    let path = format!("/v/{rest}");
    let (file, auth) = control
        .shared
        .with_world(|w| (w.media.get(&path).cloned(), w.media_auth.clone()));
    let Some(file) = file else {
        return (StatusCode::NOT_FOUND, "no such media").into_response();
    };
    if query.auth.as_deref().is_some_and(|a| a != auth) {
        return (StatusCode::UNAUTHORIZED, "bad media auth").into_response();
    }
    let expected = sha256(&file)
        .map(|h| BASE64_URL_SAFE_NO_PAD.encode(h))
        .unwrap_or_default();
    if query.token.as_deref() != Some(expected.as_str()) {
        return (StatusCode::FORBIDDEN, "the token does not name this file").into_response();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        file,
    )
        .into_response()
}

/// An [`HttpClient`] for a client in a test: URLs on the simulator's address
/// go over `http://` instead of `https://`; everything else passes through.
///
/// whatsapp-rust always builds `https://` media URLs from the `media_conn`
/// hosts, and the simulator serves plain HTTP on loopback. Give this to
/// `Bot::builder().with_http_client(..)`.
pub struct LoopbackMediaHttpClient {
    inner: Arc<dyn HttpClient>,
    https_prefix: String,
    http_prefix: String,
}

impl LoopbackMediaHttpClient {
    /// Wraps `inner` for a simulator listening on `addr`.
    pub fn new(inner: Arc<dyn HttpClient>, addr: std::net::SocketAddr) -> Self {
        Self {
            inner,
            https_prefix: format!("https://{addr}/"),
            http_prefix: format!("http://{addr}/"),
        }
    }

    fn rewrite(&self, mut request: HttpRequest) -> HttpRequest {
        if let Some(rest) = request.url.strip_prefix(&self.https_prefix) {
            request.url = format!("{}{rest}", self.http_prefix);
        }
        request
    }
}

#[async_trait]
impl HttpClient for LoopbackMediaHttpClient {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        self.inner.execute(self.rewrite(request)).await
    }

    fn supports_streaming(&self) -> bool {
        self.inner.supports_streaming()
    }

    fn execute_streaming(
        &self,
        request: HttpRequest,
    ) -> anyhow::Result<whatsapp_rust::wacore::net::StreamingHttpResponse> {
        self.inner.execute_streaming(self.rewrite(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::download::{DownloadUtils, MediaType};

    /// The client's own decryption accepts what the simulator encrypts.
    #[test]
    fn the_clients_media_decryption_accepts_our_files() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for (kind, media_type) in [
            (MediaKind::Image, MediaType::Image),
            (MediaKind::Video, MediaType::Video),
            (MediaKind::Audio, MediaType::Audio),
            (MediaKind::Document, MediaType::Document),
            (MediaKind::Sticker, MediaType::Sticker),
        ] {
            let key: [u8; 32] = rand::random();
            let file = encrypt(&key, kind, &data).unwrap();
            let plain = DownloadUtils::verify_and_decrypt(&file, &key, media_type).unwrap();
            assert_eq!(plain, data, "{kind:?}");
            let mut forged = file.clone();
            forged[0] ^= 1;
            assert!(DownloadUtils::verify_and_decrypt(&forged, &key, media_type).is_err());
        }
    }
}
