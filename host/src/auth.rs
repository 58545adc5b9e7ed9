//! JWT authentication: HS256 tokens carrying `companyId` (the tenant), `exp`,
//! and for operators `role: "operator"`.
//!
//! Only HS256 is accepted, so `alg: none` and algorithm-confusion tokens are
//! refused; `exp` is required.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::core::tenant::{Caller, TenantId, TenantIdError};
use crate::storage::{StorageError, atomic::write_atomic};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing Authorization header (expected 'Bearer <token>')")]
    Missing,
    #[error("the Authorization header must be 'Bearer <token>'")]
    NotBearer,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (its nbf is in the future)")]
    NotYetValid,
    #[error("invalid token")]
    Invalid,
    #[error("the token has no companyId (and is not an operator token)")]
    NoTenant,
    #[error("the token's companyId is not valid: {0}")]
    BadTenant(#[source] TenantIdError),
    #[error("the JWT secret cannot be used: {0}")]
    Key(#[source] jsonwebtoken::errors::Error),
    #[error("could not sign a token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// A string, or a number (the Portal's ids may be numeric).
    #[serde(rename = "companyId", default, skip_serializing_if = "Option::is_none")]
    company_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    exp: u64,
}

pub struct JwtAuth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl JwtAuth {
    pub fn new(secret: &[u8]) -> Result<JwtAuth, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = 30;
        validation.validate_nbf = true;
        Ok(JwtAuth {
            decoding: DecodingKey::from_secret(secret).map_err(AuthError::Key)?,
            encoding: EncodingKey::from_secret(secret).map_err(AuthError::Key)?,
            validation,
        })
    }

    /// The caller named by an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or(AuthError::NotBearer)?
            .trim();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid,
            })?;
        if data.claims.role.as_deref() == Some("operator") {
            return Ok(Caller::Operator);
        }
        let company = match data.claims.company_id {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return Err(AuthError::NoTenant),
        };
        TenantId::parse(&company)
            .map(Caller::Tenant)
            .map_err(AuthError::BadTenant)
    }

    /// Signs a token for `tenant` (or an operator token), valid for `ttl`.
    pub fn mint(
        &self,
        tenant: Option<&TenantId>,
        operator: bool,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let claims = Claims {
            company_id: tenant.map(|t| serde_json::Value::String(t.as_str().to_owned())),
            role: operator.then(|| "operator".to_owned()),
            exp: now_ms() / 1000 + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(AuthError::Sign)
    }
}

/// Where the secret came from, so `serve` can tell the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Configured,
    Generated,
    Existing,
}

/// The configured secret, or the one kept in `secret_file` (created on first use).
pub fn load_or_create_secret(
    configured: Option<&str>,
    secret_file: &Path,
) -> Result<(Vec<u8>, SecretSource), StorageError> {
    if let Some(secret) = configured {
        return Ok((secret.as_bytes().to_vec(), SecretSource::Configured));
    }
    match std::fs::read_to_string(secret_file) {
        Ok(text) if text.trim().len() >= 32 => {
            return Ok((text.trim().as_bytes().to_vec(), SecretSource::Existing));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io(secret_file, e)),
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| StorageError::io(secret_file, std::io::Error::other(e)))?;
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    // Created 0600 (and its directory 0700) by write_atomic, never chmod-ed after.
    write_atomic(secret_file, secret.as_bytes())?;
    Ok((secret.into_bytes(), SecretSource::Generated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_tenant_token_names_its_tenant_and_an_operator_token_is_an_operator() {
        let auth = JwtAuth::new(SECRET).unwrap();
        let acme = TenantId::parse("acme").unwrap();
        let token = auth
            .mint(Some(&acme), false, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&token))),
            Ok(Caller::Tenant(acme))
        );
        let token = auth.mint(None, true, Duration::from_secs(60)).unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&token))),
            Ok(Caller::Operator)
        );
    }

    #[test]
    fn bad_tokens_are_refused() {
        let auth = JwtAuth::new(SECRET).unwrap();
        let acme = TenantId::parse("acme").unwrap();
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some("Basic abc")),
            Err(AuthError::NotBearer)
        );
        assert_eq!(
            auth.authenticate(Some("Bearer not.a.jwt")),
            Err(AuthError::Invalid)
        );
        let other = JwtAuth::new(b"another-secret-another-secret!!!").unwrap();
        let token = other
            .mint(Some(&acme), false, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&token))),
            Err(AuthError::Invalid)
        );
        // Expired well beyond the leeway.
        let claims = Claims {
            company_id: Some("acme".into()),
            role: None,
            exp: now_ms() / 1000 - 3600,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&token))),
            Err(AuthError::Expired)
        );
        // alg: none, unsigned.
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let exp = now_ms() / 1000 + 3600;
        let token = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"companyId":"acme","exp":{exp}}}"#))
        );
        assert_eq!(
            auth.authenticate(Some(&bearer(&token))),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn a_token_is_refused_before_its_nbf_and_accepted_after() {
        let auth = JwtAuth::new(SECRET).unwrap();
        let now = now_ms() / 1000;
        let token_with_nbf = |nbf: u64| {
            let claims = serde_json::json!({ "companyId": "acme", "exp": now + 3600, "nbf": nbf });
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET).unwrap(),
            )
            .unwrap()
        };
        // Beyond the 30 s leeway: not yet.
        assert_eq!(
            auth.authenticate(Some(&bearer(&token_with_nbf(now + 600)))),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            auth.authenticate(Some(&bearer(&token_with_nbf(now - 5)))),
            Ok(Caller::Tenant(TenantId::parse("acme").unwrap()))
        );
    }

    #[test]
    fn numeric_company_ids_are_tenants_too() {
        let auth = JwtAuth::new(SECRET).unwrap();
        let claims = Claims {
            company_id: Some(serde_json::json!(42)),
            role: None,
            exp: now_ms() / 1000 + 60,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&token))),
            Ok(Caller::Tenant(TenantId::parse("42").unwrap()))
        );
    }

    #[test]
    fn a_generated_secret_is_kept_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lila/jwt.secret");
        let (first, source) = load_or_create_secret(None, &file).unwrap();
        assert_eq!(source, SecretSource::Generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&file), 0o600, "the secret is its user's only");
            assert_eq!(mode(&dir.path().join("lila")), 0o700);
        }
        let (second, source) = load_or_create_secret(None, &file).unwrap();
        assert_eq!((second, source), (first, SecretSource::Existing));
        let (configured, source) =
            load_or_create_secret(Some("configured-secret-xx"), &file).unwrap();
        assert_eq!(
            (configured.as_slice(), source),
            (&b"configured-secret-xx"[..], SecretSource::Configured)
        );
    }
}
