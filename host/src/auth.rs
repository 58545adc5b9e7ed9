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
use crate::config::JwtConfig;
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
    /// A signature that is not the tenant secret's (reported as `Invalid`).
    #[error("invalid token")]
    BadSignature,
    #[error("the token is not for this server (its iss or aud is not the configured one)")]
    WrongAudience,
    #[error("the token is valid for longer than this server accepts (at most {max_secs} s)")]
    TooLong { max_secs: u64 },
    #[error("operator tokens must be signed with the operator secret")]
    OperatorSecret,
    #[error("the token has no companyId (and is not an operator token)")]
    NoTenant,
    #[error("the token's companyId is not valid: {0}")]
    BadTenant(#[source] TenantIdError),
    #[error("the JWT secret cannot be used: {0}")]
    Key(#[source] jsonwebtoken::errors::Error),
    #[error("could not sign a token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Claims {
    /// A string, or a number (the Portal's ids may be numeric).
    #[serde(rename = "companyId", default, skip_serializing_if = "Option::is_none")]
    company_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    /// Written by `mint` when an issuer or audience is required; checked
    /// by jsonwebtoken's validation, not read here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

impl Claims {
    fn is_operator(&self) -> bool {
        self.role.as_deref() == Some("operator")
    }
}

/// One HS256 secret, for checking and for signing.
struct Keys {
    decoding: DecodingKey,
    encoding: EncodingKey,
}

impl Keys {
    fn new(secret: &[u8]) -> Result<Keys, AuthError> {
        Ok(Keys {
            decoding: DecodingKey::from_secret(secret).map_err(AuthError::Key)?,
            encoding: EncodingKey::from_secret(secret).map_err(AuthError::Key)?,
        })
    }
}

/// How far a token's times may be off (clock skew between the Portal and lila).
const LEEWAY_SECS: u64 = 30;

pub struct JwtAuth {
    tenant: Keys,
    /// `LILA_OPERATOR_JWT_SECRET`: operator tokens are signed with it only.
    operator: Option<Keys>,
    validation: Validation,
    max_lifetime: Option<Duration>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtAuth {
    /// Tokens signed with `secret`, with nothing required but `exp`.
    pub fn new(secret: &[u8]) -> Result<JwtAuth, AuthError> {
        JwtAuth::configured(secret, &JwtConfig::default())
    }

    /// Tokens signed with `secret` (operator tokens with the operator
    /// secret, when there is one), carrying what `jwt` requires.
    pub fn configured(secret: &[u8], jwt: &JwtConfig) -> Result<JwtAuth, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // What is checked is also required: a token without `iss` must not
        // pass a server that asks for one.
        let mut required = vec!["exp"];
        required.extend(jwt.issuer.as_ref().map(|_| "iss"));
        required.extend(jwt.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        if let Some(issuer) = &jwt.issuer {
            validation.set_issuer(&[issuer]);
        }
        if let Some(audience) = &jwt.audience {
            validation.set_audience(&[audience]);
        }
        Ok(JwtAuth {
            tenant: Keys::new(secret)?,
            operator: jwt
                .operator_secret
                .as_deref()
                .map(|s| Keys::new(s.as_bytes()))
                .transpose()?,
            validation,
            max_lifetime: jwt.max_lifetime,
            issuer: jwt.issuer.clone(),
            audience: jwt.audience.clone(),
        })
    }

    fn decode(&self, token: &str, keys: &Keys) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &keys.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Invalid,
            })
    }

    /// The caller named by an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        self.authenticate_until(header).map(|(caller, _)| caller)
    }

    /// The caller, and the Unix second after which its token is no longer
    /// accepted (its `exp` and the leeway for clock skew): what an event
    /// stream lives until.
    pub fn authenticate_until(&self, header: Option<&str>) -> Result<(Caller, u64), AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or(AuthError::NotBearer)?
            .trim();
        let claims = match (self.decode(token, &self.tenant), &self.operator) {
            (Ok(claims), Some(_)) if claims.is_operator() => {
                return Err(AuthError::OperatorSecret);
            }
            (Ok(claims), _) => claims,
            (Err(AuthError::BadSignature), Some(operator)) => {
                let claims = self.decode(token, operator).map_err(AuthError::public)?;
                if !claims.is_operator() {
                    return Err(AuthError::Invalid);
                }
                claims
            }
            (Err(e), _) => return Err(e.public()),
        };
        self.check_lifetime(&claims)?;
        let accepted_until = claims.exp.saturating_add(LEEWAY_SECS);
        if claims.is_operator() {
            return Ok((Caller::Operator, accepted_until));
        }
        let company = match claims.company_id {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return Err(AuthError::NoTenant),
        };
        TenantId::parse(&company)
            .map(|tenant| (Caller::Tenant(tenant), accepted_until))
            .map_err(AuthError::BadTenant)
    }

    /// A token valid for longer than the configured maximum is refused,
    /// from now or from when it says it was issued.
    fn check_lifetime(&self, claims: &Claims) -> Result<(), AuthError> {
        let Some(max) = self.max_lifetime else {
            return Ok(());
        };
        let now = now_ms() / 1000;
        let from_now = claims.exp.saturating_sub(now);
        let from_issue = claims.iat.map_or(0, |iat| claims.exp.saturating_sub(iat));
        if from_now > max.as_secs() + LEEWAY_SECS || from_issue > max.as_secs() + LEEWAY_SECS {
            return Err(AuthError::TooLong {
                max_secs: max.as_secs(),
            });
        }
        Ok(())
    }

    /// Signs a token for `tenant` (or an operator token, with the operator
    /// secret when there is one), valid for `ttl`.
    pub fn mint(
        &self,
        tenant: Option<&TenantId>,
        operator: bool,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let now = now_ms() / 1000;
        let claims = Claims {
            company_id: tenant.map(|t| serde_json::Value::String(t.as_str().to_owned())),
            role: operator.then(|| "operator".to_owned()),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let keys = match &self.operator {
            Some(keys) if operator => keys,
            _ => &self.tenant,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
            .map_err(AuthError::Sign)
    }
}

impl AuthError {
    /// What a caller is told: a wrong signature is just an invalid token.
    fn public(self) -> AuthError {
        match self {
            AuthError::BadSignature => AuthError::Invalid,
            other => other,
        }
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
            ..Default::default()
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

    fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn with_an_operator_secret_the_tenant_secret_makes_no_operator() {
        const OPERATOR: &[u8] = b"operator-secret-operator-secret-!";
        let jwt = JwtConfig {
            operator_secret: Some(String::from_utf8(OPERATOR.to_vec()).unwrap()),
            ..JwtConfig::default()
        };
        let auth = JwtAuth::configured(SECRET, &jwt).unwrap();
        let exp = now_ms() / 1000 + 600;
        let operator_claims = serde_json::json!({ "role": "operator", "exp": exp });
        // Whoever mints the Portal's tenant tokens cannot mint an operator.
        assert_eq!(
            auth.authenticate(Some(&bearer(&sign(&operator_claims, SECRET)))),
            Err(AuthError::OperatorSecret)
        );
        assert_eq!(
            auth.authenticate(Some(&bearer(&sign(&operator_claims, OPERATOR)))),
            Ok(Caller::Operator)
        );
        // The operator secret signs operators only.
        let tenant_claims = serde_json::json!({ "companyId": "acme", "exp": exp });
        assert_eq!(
            auth.authenticate(Some(&bearer(&sign(&tenant_claims, OPERATOR)))),
            Err(AuthError::Invalid)
        );
        assert!(
            auth.authenticate(Some(&bearer(&sign(&tenant_claims, SECRET))))
                .is_ok()
        );
        // `lila token --operator` signs with the operator secret.
        let minted = auth.mint(None, true, Duration::from_secs(60)).unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&minted))),
            Ok(Caller::Operator)
        );
        // A token of another secret altogether is just invalid.
        let stranger = sign(&tenant_claims, b"a-third-secret-a-third-secret-xx");
        assert_eq!(
            auth.authenticate(Some(&bearer(&stranger))),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn issuer_audience_and_lifetime_are_checked_when_configured() {
        let jwt = JwtConfig {
            issuer: Some("portal".into()),
            audience: Some("lila".into()),
            max_lifetime: Some(Duration::from_secs(3600)),
            ..JwtConfig::default()
        };
        let auth = JwtAuth::configured(SECRET, &jwt).unwrap();
        let now = now_ms() / 1000;
        let token = |claims: serde_json::Value| bearer(&sign(&claims, SECRET));
        let ok = serde_json::json!({ "companyId": "acme", "exp": now + 600, "iss": "portal", "aud": "lila" });
        assert!(auth.authenticate(Some(&token(ok))).is_ok());
        for wrong in [
            serde_json::json!({ "companyId": "acme", "exp": now + 600, "aud": "lila" }),
            serde_json::json!({ "companyId": "acme", "exp": now + 600, "iss": "other", "aud": "lila" }),
            serde_json::json!({ "companyId": "acme", "exp": now + 600, "iss": "portal", "aud": "else" }),
        ] {
            let answer = auth.authenticate(Some(&token(wrong.clone())));
            assert!(
                matches!(answer, Err(AuthError::WrongAudience | AuthError::Invalid)),
                "{wrong}: {answer:?}"
            );
        }
        let a_year = serde_json::json!({ "companyId": "acme", "exp": now + 365 * 86400, "iss": "portal", "aud": "lila" });
        assert_eq!(
            auth.authenticate(Some(&token(a_year))),
            Err(AuthError::TooLong { max_secs: 3600 })
        );
        let issued_long_ago = serde_json::json!({ "companyId": "acme", "iat": now - 86400, "exp": now + 60, "iss": "portal", "aud": "lila" });
        assert_eq!(
            auth.authenticate(Some(&token(issued_long_ago))),
            Err(AuthError::TooLong { max_secs: 3600 })
        );
        // What lila mints itself carries what it requires.
        let acme = TenantId::parse("acme").unwrap();
        let minted = auth
            .mint(Some(&acme), false, Duration::from_secs(600))
            .unwrap();
        assert_eq!(
            auth.authenticate(Some(&bearer(&minted))),
            Ok(Caller::Tenant(acme))
        );
    }

    #[test]
    fn numeric_company_ids_are_tenants_too() {
        let auth = JwtAuth::new(SECRET).unwrap();
        let claims = Claims {
            company_id: Some(serde_json::json!(42)),
            role: None,
            exp: now_ms() / 1000 + 60,
            ..Default::default()
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
