//! KMS request and response shapes, named and spelled as in AWS's service model
//! (`botocore/data/kms/2014-11-01/service-2.json`).
//!
//! Request members are all optional here: presence and bounds are checked by the
//! operations with [`crate::validate::Validator`], so that a missing member gets AWS's
//! `ValidationException` wording rather than a deserializer message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Base64 blobs, as the JSON protocol carries them.
pub(crate) mod blob {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t.as_bytes())
                .map_err(|_| serde::de::Error::custom("Blob member is not valid base64"))
        })
        .transpose()
    }
}

pub(crate) type Context = BTreeMap<String, String>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct CreateKeyRequest {
    pub policy: Option<String>,
    pub description: Option<String>,
    pub key_usage: Option<String>,
    pub customer_master_key_spec: Option<String>,
    pub key_spec: Option<String>,
    pub origin: Option<String>,
    pub custom_key_store_id: Option<String>,
    pub bypass_policy_lockout_safety_check: Option<bool>,
    pub tags: Option<Vec<Tag>>,
    pub multi_region: Option<bool>,
}

/// Requests that name one key and nothing else of note (DescribeKey, EnableKey, …),
/// plus the optional members that some of them carry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct KeyRequest {
    pub key_id: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub description: Option<String>,
    pub pending_window_in_days: Option<i64>,
    pub rotation_period_in_days: Option<i64>,
    pub policy_name: Option<String>,
    pub policy: Option<String>,
    pub bypass_policy_lockout_safety_check: Option<bool>,
    pub include_key_material: Option<String>,
    pub tags: Option<Vec<Tag>>,
    pub tag_keys: Option<Vec<String>>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct ListRequest {
    pub key_id: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct CryptoRequest {
    pub key_id: Option<String>,
    #[serde(with = "blob")]
    pub plaintext: Option<Vec<u8>>,
    #[serde(with = "blob")]
    pub ciphertext_blob: Option<Vec<u8>>,
    pub encryption_context: Option<Context>,
    pub encryption_algorithm: Option<String>,
    pub grant_tokens: Option<Vec<String>>,
    pub number_of_bytes: Option<i64>,
    pub key_spec: Option<String>,
    pub dry_run: Option<bool>,
    pub custom_key_store_id: Option<String>,
    // ReEncrypt
    pub source_key_id: Option<String>,
    pub destination_key_id: Option<String>,
    pub source_encryption_context: Option<Context>,
    pub destination_encryption_context: Option<Context>,
    pub source_encryption_algorithm: Option<String>,
    pub destination_encryption_algorithm: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct AliasRequest {
    pub alias_name: Option<String>,
    pub target_key_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Tag {
    pub tag_key: String,
    pub tag_value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: String,
    pub key_id: String,
    pub arn: String,
    pub creation_date: f64,
    pub enabled: bool,
    pub description: String,
    pub key_usage: &'static str,
    pub key_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<f64>,
    pub origin: &'static str,
    pub key_manager: &'static str,
    pub customer_master_key_spec: &'static str,
    pub key_spec: &'static str,
    pub encryption_algorithms: [&'static str; 1],
    pub multi_region: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_deletion_window_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_key_material_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KeyMetadataResponse {
    pub key_metadata: KeyMetadata,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KeyListEntry {
    pub key_id: String,
    pub key_arn: String,
}

/// A page of a list response: `Truncated`, and `NextMarker` when truncated.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Page<T: Serialize> {
    #[serde(flatten)]
    pub items: T,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AliasListEntry {
    pub alias_name: String,
    pub alias_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_date: Option<f64>,
}
