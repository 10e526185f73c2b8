//! IAM records as stored.

use kura_crypto::SecretBytes;
use kura_policy::{Principal, PrincipalKind};
use kura_store::Table;
use kura_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::IamError;

pub(crate) const ACCOUNTS: Table = Table("iam.accounts");
pub(crate) const USERS: Table = Table("iam.users");
pub(crate) const ACCESS_KEYS: Table = Table("iam.access_keys");

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AccountRecord {
    pub id: String,
    pub created: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    pub account: String,
    pub name: String,
    pub path: String,
    /// The stable unique id AWS calls `UserId` (`AIDA…`), CloudTrail's `principalId`.
    pub user_id: String,
    pub created: Timestamp,
    /// ARNs of attached managed policies.
    #[serde(default)]
    pub attached_policies: Vec<String>,
}

impl UserRecord {
    pub fn arn(&self) -> String {
        crate::user_arn(&self.account, &self.name)
    }

    pub fn store_key(&self) -> String {
        format!("{}/{}", self.account, self.name)
    }

    pub fn principal(&self) -> Principal {
        Principal {
            arn: self.arn(),
            account: self.account.clone(),
            kind: PrincipalKind::User,
            user_id: self.user_id.clone(),
            username: Some(self.name.clone()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KeyStatus {
    Active,
    Inactive,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AccessKeyRecord {
    pub access_key_id: String,
    pub account: String,
    pub user_name: String,
    /// The secret access key wrapped by the root key (label `kura/iam/access-key/<id>`).
    pub wrapped_secret: String,
    pub status: KeyStatus,
    pub created: Timestamp,
}

const ID_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A unique id in AWS's style: a 4-letter prefix and 16 characters of base32 randomness,
/// e.g. `AKIA…` for access keys and `AIDA…` for users.
pub(crate) fn new_unique_id(prefix: &str) -> Result<String, IamError> {
    let mut random = [0u8; 16];
    kura_crypto::fill_random(&mut random)?;
    let mut id = String::with_capacity(prefix.len() + random.len());
    id.push_str(prefix);
    for byte in random {
        id.push(char::from(ID_ALPHABET[usize::from(byte & 31)]));
    }
    Ok(id)
}

/// A 40-character secret access key, from 30 random bytes in base64 (as AWS's look).
pub(crate) fn new_secret_access_key() -> Result<SecretBytes, IamError> {
    use base64::Engine as _;
    let random = kura_crypto::random_secret(30)?;
    let text = base64::engine::general_purpose::STANDARD.encode(random.expose());
    Ok(SecretBytes::new(text.into_bytes()))
}
