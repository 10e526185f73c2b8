//! IAM records as stored.
//!
//! Every record is one JSON value in one table, keyed so that a prefix scan by account
//! lists an account's entities. Names are kept as the caller spelled them; lookups by
//! name ignore case, as IAM's do.

use std::collections::BTreeMap;

use kura_crypto::SecretBytes;
use kura_policy::{Principal, PrincipalKind};
use kura_store::Table;
use kura_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::IamError;

pub(crate) const ACCOUNTS: Table = Table("iam.accounts");
pub(crate) const USERS: Table = Table("iam.users");
pub(crate) const ACCESS_KEYS: Table = Table("iam.access_keys");
pub(crate) const ROLES: Table = Table("iam.roles");
pub(crate) const POLICIES: Table = Table("iam.policies");
pub(crate) const SESSIONS: Table = Table("iam.sessions");

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AccountRecord {
    pub id: String,
    pub created: Timestamp,
}

/// A resource tag (`Tags.member.N.Key/Value`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    pub account: String,
    pub name: String,
    pub path: String,
    /// The stable unique id AWS calls `UserId` (`AIDA…`), CloudTrail's `principalId`.
    pub user_id: String,
    pub created: Timestamp,
    /// ARNs of attached managed policies, in attachment order.
    #[serde(default)]
    pub attached_policies: Vec<String>,
    /// Inline policies: name → document as the caller wrote it.
    #[serde(default)]
    pub inline_policies: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The managed policies the configuration file declared for this user the last time
    /// it was applied (`None`: never recorded, i.e. every attachment came from it).
    #[serde(default)]
    pub declared_policies: Option<Vec<String>>,
}

impl UserRecord {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:user{}{}",
            self.account, self.path, self.name
        )
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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RoleRecord {
    pub account: String,
    pub name: String,
    pub path: String,
    /// `AROA…`: the first half of every session's `aws:userid`.
    pub role_id: String,
    pub created: Timestamp,
    /// The trust (assume-role) policy as the caller wrote it.
    pub trust_policy: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Longest session AssumeRole may grant, in seconds (3600-43200).
    pub max_session_duration: u32,
    #[serde(default)]
    pub attached_policies: Vec<String>,
    #[serde(default)]
    pub inline_policies: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl RoleRecord {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:role{}{}",
            self.account, self.path, self.name
        )
    }

    pub fn store_key(&self) -> String {
        format!("{}/{}", self.account, self.name)
    }
}

/// One version of a customer managed policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PolicyVersionRecord {
    /// `v1`, `v2`, …
    pub version_id: String,
    pub document: String,
    pub created: Timestamp,
}

/// A customer managed policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PolicyRecord {
    pub account: String,
    pub name: String,
    pub path: String,
    /// `ANPA…`
    pub policy_id: String,
    #[serde(default)]
    pub description: Option<String>,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub default_version: String,
    pub versions: Vec<PolicyVersionRecord>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl PolicyRecord {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:policy{}{}",
            self.account, self.path, self.name
        )
    }

    pub fn store_key(&self) -> String {
        format!("{}/{}", self.account, self.name)
    }

    pub fn default_document(&self) -> Option<&PolicyVersionRecord> {
        self.versions
            .iter()
            .find(|v| v.version_id == self.default_version)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KeyStatus {
    Active,
    Inactive,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
        }
    }
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

/// Temporary credentials issued by AssumeRole.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    /// `ASIA…`
    pub access_key_id: String,
    /// The role's account (the session's principal account).
    pub account: String,
    pub role_arn: String,
    pub role_name: String,
    pub role_id: String,
    pub session_name: String,
    pub created: Timestamp,
    pub expires: Timestamp,
    /// The secret access key, wrapped by the root key (label `kura/sts/session-secret/<id>`).
    pub wrapped_secret: String,
    /// The session token, wrapped by the root key (label `kura/sts/session-token/<id>`).
    pub wrapped_token: String,
    /// Who called AssumeRole.
    pub source_arn: String,
}

impl SessionRecord {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:sts::{}:assumed-role/{}/{}",
            self.account, self.role_name, self.session_name
        )
    }

    /// `aws:userid` of the session: `AROA…:session-name`.
    pub fn user_id(&self) -> String {
        format!("{}:{}", self.role_id, self.session_name)
    }

    pub fn principal(&self) -> Principal {
        Principal {
            arn: self.arn(),
            account: self.account.clone(),
            kind: PrincipalKind::AssumedRole {
                role_arn: self.role_arn.clone(),
                session_name: self.session_name.clone(),
            },
            user_id: self.user_id(),
            username: None,
        }
    }
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

/// A session token: 192 random bytes in base64 (256 characters), opaque to clients.
pub(crate) fn new_session_token() -> Result<SecretBytes, IamError> {
    use base64::Engine as _;
    let random = kura_crypto::random_secret(192)?;
    let text = base64::engine::general_purpose::STANDARD.encode(random.expose());
    Ok(SecretBytes::new(text.into_bytes()))
}
