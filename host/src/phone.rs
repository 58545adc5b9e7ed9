//! `Phone`: a phone number that has been validated, so it can be joined to a path.
//!
//! Every path the host builds for a phone goes through this type. It can only
//! be constructed by [`Phone::parse`], which accepts 8 to 15 ASCII digits
//! (E.164 without the `+`) and nothing else: no `..`, no separators, no NUL,
//! no unicode digits, no leading `+`, no spaces.

use std::fmt;

/// Shortest phone number accepted (E.164 numbers are at least 8 digits in practice).
pub const MIN_DIGITS: usize = 8;
/// Longest phone number E.164 allows.
pub const MAX_DIGITS: usize = 15;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error(
        "phone number must be {MIN_DIGITS} to {MAX_DIGITS} digits (E.164 without '+'), got {0} characters"
    )]
    Length(usize),
    #[error(
        "phone number must contain only the digits 0-9 (E.164 without '+', spaces or separators)"
    )]
    NotDigits,
}

impl Phone {
    pub fn parse(raw: &str) -> Result<Phone, PhoneError> {
        // Check the characters first: a length error on "../../etc" would be
        // less helpful than saying that only digits are allowed.
        if !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneError::NotDigits);
        }
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&raw.len()) {
            return Err(PhoneError::Length(raw.chars().count()));
        }
        Ok(Phone(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, ok: bool) {
        assert_eq!(Phone::parse(raw).is_ok(), ok, "{raw:?}");
    }

    #[test]
    fn accepts_only_8_to_15_ascii_digits() {
        check("51987654321", true);
        check("12345678", true);
        check("123456789012345", true);
        check("1234567", false);
        check("1234567890123456", false);
        check("123", false);
        check(&"1".repeat(40), false);
        check("", false);
        check("..", false);
        check("../../etc/passwd", false);
        check("%2e%2e%2f", false);
        check("+51987654321", false);
        check("51 987654321", false);
        check("5198765432\0", false);
        check("٥١٩٨٧٦٥٤٣٢١", false); // Arabic-Indic digits
        check("５１９８７６５４３２１", false); // fullwidth digits
        check("51987654321/", false);
    }
}
