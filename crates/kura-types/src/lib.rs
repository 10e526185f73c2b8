//! The shared vocabulary of kura: account ids, regions, ARNs and time.
//!
//! Owns: small value types every other crate speaks in, their parsing and their
//! canonical text forms. Must not: do I/O, know about any service's rules, or pull
//! in heavy dependencies — every crate in the workspace depends on this one.

mod arn;
mod clock;

pub use arn::{Arn, ArnError};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};

use std::fmt;

use serde::{Deserialize, Serialize};

/// A 12-digit AWS account id, such as `000000000000`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// Parses a 12-digit account id.
    pub fn parse(text: &str) -> Result<Self, InvalidAccountId> {
        if text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidAccountId(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ARN of the account's root principal, `arn:aws:iam::ID:root`.
    pub fn root_arn(&self) -> String {
        format!("arn:aws:iam::{}:root", self.0)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AccountId {
    type Error = InvalidAccountId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AccountId> for String {
    fn from(value: AccountId) -> Self {
        value.0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a 12-digit account id")]
pub struct InvalidAccountId(pub String);

/// An AWS region name such as `us-east-1`. kura serves one region per server.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

impl Region {
    /// Accepts the shape of AWS region names: lowercase letters, digits and dashes.
    pub fn parse(text: &str) -> Result<Self, InvalidRegion> {
        let well_formed = !text.is_empty()
            && text.len() <= 32
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if well_formed {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidRegion(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Region {
    type Error = InvalidRegion;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Region> for String {
    fn from(value: Region) -> Self {
        value.0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a valid region name")]
pub struct InvalidRegion(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(AccountId::parse("000000000000").is_ok());
        assert!(AccountId::parse("00000000000").is_err());
        assert!(AccountId::parse("00000000000a").is_err());
        assert_eq!(
            AccountId::parse("111122223333")
                .map(|a| a.root_arn())
                .unwrap_or_default(),
            "arn:aws:iam::111122223333:root"
        );
    }

    #[test]
    fn regions_have_aws_shape() {
        assert!(Region::parse("ap-northeast-1").is_ok());
        assert!(Region::parse("US-EAST-1").is_err());
        assert!(Region::parse("").is_err());
        assert!(Region::parse("-x").is_err());
    }
}
