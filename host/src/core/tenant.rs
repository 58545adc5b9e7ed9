//! Who is calling: a tenant (the Portal's company) or an operator.

use std::fmt;

/// A tenant id (the Portal's `companyId`). Opaque, but bounded and printable,
/// because it ends up in logs and in files.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    #[error("companyId must not be empty")]
    Empty,
    #[error("companyId must be at most 128 characters")]
    TooLong,
    #[error("companyId must not contain control characters")]
    Control,
}

impl TenantId {
    pub fn parse(raw: &str) -> Result<TenantId, TenantIdError> {
        if raw.is_empty() {
            return Err(TenantIdError::Empty);
        }
        if raw.chars().count() > 128 {
            return Err(TenantIdError::TooLong);
        }
        if raw.chars().any(char::is_control) {
            return Err(TenantIdError::Control);
        }
        Ok(TenantId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A tenant may act on the phones it owns, and only on those.
    Tenant(TenantId),
    /// An operator may act on every tenant's phones.
    Operator,
}

impl Caller {
    /// Whether this caller may see and act on a phone owned by `owner`.
    /// `owner` is `None` for files with no record (left by another program):
    /// only an operator may touch those.
    pub fn may_access(&self, owner: Option<&TenantId>) -> bool {
        match (self, owner) {
            (Caller::Operator, _) => true,
            (Caller::Tenant(me), Some(owner)) => me == owner,
            (Caller::Tenant(_), None) => false,
        }
    }

    /// The tenant this caller acts as, if it is a tenant.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Caller::Tenant(t) => Some(t),
            Caller::Operator => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_see_only_their_own_phones_and_operators_see_all() {
        let a = TenantId::parse("acme").unwrap();
        let b = TenantId::parse("globex").unwrap();
        assert!(Caller::Tenant(a.clone()).may_access(Some(&a)));
        assert!(!Caller::Tenant(b.clone()).may_access(Some(&a)));
        assert!(!Caller::Tenant(b).may_access(None));
        assert!(Caller::Operator.may_access(Some(&a)));
        assert!(Caller::Operator.may_access(None));
    }

    #[test]
    fn tenant_ids_are_bounded_and_printable() {
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse(&"x".repeat(129)).is_err());
        assert!(TenantId::parse("a\nb").is_err());
        assert!(TenantId::parse("empresa-42").is_ok());
    }
}
