//! KMS records as stored, and the vocabulary of key states and kinds.

use std::collections::BTreeMap;

use kura_store::Table;
use kura_types::Timestamp;
use serde::{Deserialize, Serialize};

pub(crate) const KEYS: Table = Table("kms.keys");
pub(crate) const ALIASES: Table = Table("kms.aliases");
pub(crate) const GRANTS: Table = Table("kms.grants");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
            Self::PendingDeletion => "PendingDeletion",
        }
    }
}

/// Who manages a key: the customer, or an AWS service (`alias/aws/<service>` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyManager {
    Aws,
    Customer,
}

impl KeyManager {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "AWS",
            Self::Customer => "CUSTOMER",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotationType {
    Automatic,
    OnDemand,
}

impl RotationType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Automatic => "AUTOMATIC",
            Self::OnDemand => "ON_DEMAND",
        }
    }
}

/// One version of a key's material, wrapped by the root key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MaterialRecord {
    /// 1 for the key's original material, +1 for each rotation.
    pub version: u32,
    /// The public identifier AWS calls `KeyMaterialId` (64 hex characters).
    pub material_id: String,
    /// Base64 of the material wrapped under the root key, label
    /// `kura/kms/backing-key/<key-id>/<version>`.
    pub wrapped: String,
    pub created: Timestamp,
    /// How this version came to be; `None` for the original material.
    pub rotation: Option<RotationType>,
}

/// Automatic-rotation settings of a key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RotationSettings {
    pub enabled: bool,
    pub period_days: Option<u32>,
    pub next_rotation: Option<Timestamp>,
    pub on_demand_count: u32,
}

/// A KMS key as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub id: uuid::Uuid,
    pub account: String,
    pub region: String,
    pub description: String,
    pub created: Timestamp,
    pub state: KeyState,
    pub deletion_date: Option<Timestamp>,
    pub pending_window_days: Option<u32>,
    pub manager: KeyManager,
    /// The key policy document exactly as the owner wrote it.
    pub policy: String,
    pub rotation: RotationSettings,
    /// Material versions, oldest first; the last one is current.
    pub materials: Vec<MaterialRecord>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl KeyRecord {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:kms:{}:{}:key/{}",
            self.region, self.account, self.id
        )
    }

    pub fn current_material(&self) -> Option<&MaterialRecord> {
        self.materials.last()
    }
}

/// An alias (`alias/…`) pointing at a key of the same account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AliasRecord {
    pub account: String,
    pub region: String,
    /// The full name, `alias/…`.
    pub name: String,
    pub target: uuid::Uuid,
    pub created: Timestamp,
    pub updated: Timestamp,
}

impl AliasRecord {
    pub fn arn(&self) -> String {
        alias_arn(&self.region, &self.account, &self.name)
    }

    pub fn store_key(&self) -> String {
        alias_store_key(&self.account, &self.name)
    }
}

pub(crate) fn alias_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:kms:{region}:{account}:{name}")
}

pub(crate) fn alias_store_key(account: &str, name: &str) -> String {
    format!("{account}/{name}")
}

/// Conditions a grant puts on the encryption context of the requests it allows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GrantConstraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_subset: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_equals: Option<BTreeMap<String, String>>,
}

/// A grant: permission for a grantee to use one key for some operations.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct GrantRecord {
    /// 64 hex characters.
    pub grant_id: String,
    pub key_id: uuid::Uuid,
    /// The account that owns the key (and where the grant was created).
    pub key_account: String,
    pub name: Option<String>,
    pub grantee_principal: String,
    pub retiring_principal: Option<String>,
    /// Grant operation names (`Encrypt`, `Decrypt`, `CreateGrant`, ...).
    pub operations: Vec<String>,
    pub constraints: Option<GrantConstraints>,
    pub created: Timestamp,
    /// Whether an integrated service created it for the caller (`kms:GrantIsForAWSResource`).
    pub for_aws_resource: bool,
}

impl GrantRecord {
    pub fn store_key(&self) -> String {
        format!("{}/{}", self.key_id, self.grant_id)
    }
}
