//! How a connection reaches the server: the database URL, with libpq's TLS
//! parameters, as the settings the pool and the listeners share.
//!
//! tokio-postgres parses the URL but knows `sslmode=disable|prefer|require`
//! only; an operator's libpq URL also says `verify-ca`, `verify-full` and
//! `sslrootcert=/path/ca.pem`. Those are taken out of the URL here, the rest
//! is handed to tokio-postgres as is, and the TLS is rustls (on ring, the
//! provider the rest of lila uses) through `tokio-postgres-rustls`.
//!
//! What each `sslmode` means, as libpq documents it:
//!
//! | sslmode | encrypted | the certificate's chain | its host name |
//! | --- | --- | --- | --- |
//! | `disable` | no | - | - |
//! | `prefer` (no sslmode) | when the server offers TLS | only with `sslrootcert` | no |
//! | `require` | yes, or no connection | only with `sslrootcert` | no |
//! | `verify-ca` | yes | against `sslrootcert` | no |
//! | `verify-full` | yes | against `sslrootcert` | must name the URL's host |
//!
//! `verify-*` without `sslrootcert` is an error (libpq would read
//! `~/.postgresql/root.crt`; lila reads no file it was not told of).
//! `sslrootcert=system` trusts Mozilla's roots (webpki-roots, compiled in)
//! and, as in libpq, needs `verify-full`: any public CA can issue a
//! certificate for some name, so only the name check makes it safe.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::backend::CONNECTION_TIMEOUT;
use crate::error::DatabaseUrlError;

/// libpq's `sslmode`, the five values lila takes (not `allow`, which tries
/// plain first: tokio-postgres cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// Whether the server's certificate must chain to `sslrootcert`.
    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// What tokio-postgres is told: whether to ask for TLS, and to insist.
    /// What the certificate must be is the verifier's business.
    fn for_tokio_postgres(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

impl FromStr for SslMode {
    type Err = DatabaseUrlError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(DatabaseUrlError::UnknownSslMode(other.to_owned())),
        }
    }
}

/// The CAs a verifying connection trusts (libpq's `sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCertificates {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// `sslrootcert=system`: Mozilla's roots (webpki-roots).
    System,
}

/// The connection settings of a database URL: tokio-postgres's
/// configuration (with [`CONNECTION_TIMEOUT`] unless the URL sets one) and
/// the TLS connector its `sslmode` and `sslrootcert` ask for.
pub(crate) struct ConnectSettings {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub ssl_mode: SslMode,
}

impl std::fmt::Debug for ConnectSettings {
    // Not the configuration: it holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSettings")
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

/// The URL's own parameters, with libpq's TLS ones taken out.
#[derive(Debug, PartialEq, Eq)]
struct SplitUrl {
    /// The URL as tokio-postgres takes it: without `sslmode`, `sslrootcert`.
    rest: String,
    ssl_mode: Option<SslMode>,
    root: Option<RootCertificates>,
}

/// libpq's client-certificate parameters, which lila does not implement: a
/// URL that names one is refused rather than connecting without it.
const CLIENT_CERTIFICATE_PARAMETERS: &[&str] = &["sslcert", "sslkey", "sslpassword"];

/// Splits libpq's TLS parameters off a `postgres://` URL. The query starts
/// at the first `?` after the credentials, where tokio-postgres finds it (a
/// password may hold a `?`); `&`-separated `key=value` pairs follow, keys and
/// values percent-encoded. The last `sslmode` (or `sslrootcert`) wins, as in
/// libpq. Anything else is left, byte for byte, for tokio-postgres.
fn split_url(url: &str) -> Result<SplitUrl, DatabaseUrlError> {
    let mut split = SplitUrl {
        rest: url.to_owned(),
        ssl_mode: None,
        root: None,
    };
    let Some(after_scheme) = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
    else {
        return Ok(split);
    };
    let authority = after_scheme.find('@').map_or(0, |at| at + 1);
    let Some(query_at) = after_scheme[authority..].find('?') else {
        return Ok(split);
    };
    let query_at = url.len() - after_scheme.len() + authority + query_at;
    let mut kept = Vec::new();
    for pair in url[query_at + 1..].split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(key, "a parameter's name")?.as_str() {
            "sslmode" => split.ssl_mode = Some(decode(value, "sslmode")?.parse()?),
            "sslrootcert" => {
                let value = decode(value, "sslrootcert")?;
                split.root = Some(if value == "system" {
                    RootCertificates::System
                } else {
                    RootCertificates::File(PathBuf::from(value))
                });
            }
            name if CLIENT_CERTIFICATE_PARAMETERS.contains(&name) => {
                return Err(DatabaseUrlError::ClientCertificate(name.to_owned()));
            }
            _ => kept.push(pair),
        }
    }
    split.rest = url[..query_at].to_owned();
    if !kept.is_empty() {
        split.rest.push('?');
        split.rest.push_str(&kept.join("&"));
    }
    Ok(split)
}

fn decode(text: &str, what: &'static str) -> Result<String, DatabaseUrlError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| DatabaseUrlError::NotUtf8(what))
}

/// The settings `database_url` asks for: a `postgres://` URL (libpq's
/// `sslmode` and `sslrootcert` understood), or tokio-postgres's `key=value`
/// form (its own `sslmode` values only). Reads the CA file, if any, now.
pub(crate) fn connect_settings(database_url: &str) -> Result<ConnectSettings, DatabaseUrlError> {
    let split = split_url(database_url)?;
    let mut config =
        tokio_postgres::Config::from_str(&split.rest).map_err(DatabaseUrlError::Invalid)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECTION_TIMEOUT);
    }
    let ssl_mode = split.ssl_mode.unwrap_or(match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => SslMode::Disable,
        tokio_postgres::config::SslMode::Prefer => SslMode::Prefer,
        // Require, and whatever a later tokio-postgres adds: the strictest it knows.
        _ => SslMode::Require,
    });
    config.ssl_mode(ssl_mode.for_tokio_postgres());
    let tls = MakeRustlsConnect::new(client_config(ssl_mode, split.root.as_ref())?);
    Ok(ConnectSettings {
        config,
        tls,
        ssl_mode,
    })
}

/// rustls's client configuration for `mode` (with `disable`, tokio-postgres
/// never starts TLS, and the configuration goes unused).
fn client_config(
    mode: SslMode,
    root: Option<&RootCertificates>,
) -> Result<ClientConfig, DatabaseUrlError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(DatabaseUrlError::Tls)?;
    let config = match (mode, root) {
        (SslMode::Disable, _) => builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
        (SslMode::VerifyFull, Some(RootCertificates::System)) => builder
            .with_root_certificates(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth(),
        (mode, Some(RootCertificates::System)) => {
            return Err(DatabaseUrlError::SystemRootsNeedVerifyFull(mode));
        }
        (SslMode::VerifyFull, Some(RootCertificates::File(path))) => builder
            .with_root_certificates(read_root_certificates(path)?)
            .with_no_client_auth(),
        // libpq: with a root certificate, `require` (and `prefer`) verify
        // the chain as `verify-ca` does.
        (_, Some(RootCertificates::File(path))) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(WithoutHostName {
                trust: Trust::ChainTo(Arc::new(read_root_certificates(path)?)),
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        (mode, None) if mode.verifies() => {
            return Err(DatabaseUrlError::NoRootCertificate(mode));
        }
        (_, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(WithoutHostName {
                trust: Trust::AnyCertificate,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// The CA certificates of a PEM file, every one of them usable as a trust anchor.
fn read_root_certificates(path: &Path) -> Result<RootCertStore, DatabaseUrlError> {
    let pem =
        std::fs::read(path).map_err(|source| DatabaseUrlError::UnreadableRootCertificate {
            path: path.to_owned(),
            source,
        })?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|_| DatabaseUrlError::NotPem(path.to_owned()))?;
        roots
            .add(certificate)
            .map_err(|source| DatabaseUrlError::BadRootCertificate {
                path: path.to_owned(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(DatabaseUrlError::NotPem(path.to_owned()));
    }
    Ok(roots)
}

/// What a verifier that does not check the host name trusts (every mode
/// but `verify-full`, which is rustls's own `WebPkiServerVerifier`).
#[derive(Debug)]
enum Trust {
    /// `verify-ca` (and `require` or `prefer` with `sslrootcert`): the
    /// server's certificate must chain to one of these roots and be valid
    /// now, whatever host name it carries. It rules out an attacker without
    /// a certificate from that CA; a CA that signs only database servers
    /// makes it about as good as `verify-full`.
    ChainTo(Arc<RootCertStore>),
    /// `require` and `prefer` without `sslrootcert`: ANY certificate, as
    /// libpq accepts. The connection is encrypted against someone who only
    /// listens, not against someone in the middle, who can present a
    /// certificate of their own; `verify-full` is what stops that.
    AnyCertificate,
}

/// A server certificate verifier without the host name check. Whatever it
/// trusts, the handshake's signature is checked against the certificate
/// presented (so the server holds that certificate's key), as TLS expects.
#[derive(Debug)]
struct WithoutHostName {
    trust: Trust,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for WithoutHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Trust::ChainTo(roots) => verify_server_cert_signed_by_trust_anchor(
                &ParsedCertificate::try_from(end_entity)?,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?,
            Trust::AnyCertificate => {}
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> SplitUrl {
        split_url(url).unwrap()
    }

    #[test]
    fn libpq_parameters_are_taken_out_and_the_rest_is_left_as_it_was() {
        let url = "postgres://lila:p%3Fw@db:5432/lila?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem&connect_timeout=3";
        assert_eq!(
            split(url),
            SplitUrl {
                rest: "postgres://lila:p%3Fw@db:5432/lila?application_name=x&connect_timeout=3"
                    .into(),
                ssl_mode: Some(SslMode::VerifyFull),
                root: Some(RootCertificates::File("/etc/ca dir/ca.pem".into())),
            }
        );
        let only = split("postgresql://db/lila?sslmode=require&sslrootcert=system");
        assert_eq!(only.rest, "postgresql://db/lila");
        assert_eq!(only.ssl_mode, Some(SslMode::Require));
        assert_eq!(only.root, Some(RootCertificates::System));
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let url = "postgres://lila:a?sslmode=disable@db/lila?sslmode=verify-ca&sslrootcert=/ca.pem";
        let split = split(url);
        assert_eq!(split.rest, "postgres://lila:a?sslmode=disable@db/lila");
        assert_eq!(split.ssl_mode, Some(SslMode::VerifyCa));
    }

    #[test]
    fn the_last_sslmode_wins_and_no_sslmode_is_tokio_postgres_s() {
        assert_eq!(
            split("postgres://db/x?sslmode=disable&sslmode=require").ssl_mode,
            Some(SslMode::Require)
        );
        let plain = split("postgres://db/x");
        assert_eq!(
            (plain.rest.as_str(), plain.ssl_mode),
            ("postgres://db/x", None)
        );
        let key_value = split("host=db sslmode=require");
        assert_eq!(key_value.rest, "host=db sslmode=require");
    }

    #[test]
    fn the_default_is_prefer_and_verify_modes_ask_tokio_postgres_for_tls() {
        let default = connect_settings("postgres://db/x").unwrap();
        assert_eq!(default.ssl_mode, SslMode::Prefer);
        assert_eq!(
            default.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
        let disabled = connect_settings("host=db sslmode=disable").unwrap();
        assert_eq!(disabled.ssl_mode, SslMode::Disable);
        let required = connect_settings("postgres://db/x?sslmode=require").unwrap();
        assert_eq!(
            required.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let system =
            connect_settings("postgres://db/x?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(
            system.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(
            system.config.get_connect_timeout(),
            Some(&CONNECTION_TIMEOUT)
        );
    }
}
