//! The KMS operations, one module per family, and what they share: dispatch, paging,
//! key metadata, and the audit view of a request.

mod aliases;
mod crypto;
mod grants;
mod keys;
mod policy;
mod rotation;
mod tags;

use base64::Engine as _;
use kura_edge::{AuditDetails, RequestContext};
use serde::Serialize;

use crate::error::{KmsError, KmsResult};
use crate::operation::Operation;
use crate::registry::KeyEntry;
use crate::validate::Validator;
use crate::wire::{KeyMetadata, Page};
use crate::{Kms, key_resource, parse, respond};

/// Runs `op` on the JSON `body`.
pub(crate) fn dispatch(
    kms: &Kms,
    ctx: &RequestContext,
    op: Operation,
    body: &[u8],
    audit: &mut AuditDetails,
) -> KmsResult<Vec<u8>> {
    let mut call = Call { kms, ctx, audit };
    match op {
        Operation::CreateKey => respond(&call.create_key(parse(body)?)?),
        Operation::DescribeKey => respond(&call.describe_key(parse(body)?)?),
        Operation::ListKeys => respond(&call.list_keys(parse(body)?)?),
        Operation::UpdateKeyDescription => respond(&call.update_key_description(parse(body)?)?),
        Operation::EnableKey => respond(&call.enable_key(parse(body)?)?),
        Operation::DisableKey => respond(&call.disable_key(parse(body)?)?),
        Operation::ScheduleKeyDeletion => respond(&call.schedule_key_deletion(parse(body)?)?),
        Operation::CancelKeyDeletion => respond(&call.cancel_key_deletion(parse(body)?)?),
        Operation::Encrypt => respond(&call.encrypt(parse(body)?)?),
        Operation::Decrypt => respond(&call.decrypt(parse(body)?)?),
        Operation::ReEncrypt => respond(&call.re_encrypt(parse(body)?)?),
        Operation::GenerateDataKey => respond(&call.generate_data_key(parse(body)?, true)?),
        Operation::GenerateDataKeyWithoutPlaintext => {
            respond(&call.generate_data_key(parse(body)?, false)?)
        }
        Operation::GenerateRandom => respond(&call.generate_random(parse(body)?)?),
        Operation::CreateAlias => respond(&call.create_alias(parse(body)?)?),
        Operation::UpdateAlias => respond(&call.update_alias(parse(body)?)?),
        Operation::DeleteAlias => respond(&call.delete_alias(parse(body)?)?),
        Operation::ListAliases => respond(&call.list_aliases(parse(body)?)?),
        Operation::GetKeyPolicy => respond(&call.get_key_policy(parse(body)?)?),
        Operation::PutKeyPolicy => respond(&call.put_key_policy(parse(body)?)?),
        Operation::ListKeyPolicies => respond(&call.list_key_policies(parse(body)?)?),
        Operation::EnableKeyRotation => respond(&call.enable_key_rotation(parse(body)?)?),
        Operation::DisableKeyRotation => respond(&call.disable_key_rotation(parse(body)?)?),
        Operation::GetKeyRotationStatus => respond(&call.get_key_rotation_status(parse(body)?)?),
        Operation::RotateKeyOnDemand => respond(&call.rotate_key_on_demand(parse(body)?)?),
        Operation::ListKeyRotations => respond(&call.list_key_rotations(parse(body)?)?),
        Operation::TagResource => respond(&call.tag_resource(parse(body)?)?),
        Operation::UntagResource => respond(&call.untag_resource(parse(body)?)?),
        Operation::ListResourceTags => respond(&call.list_resource_tags(parse(body)?)?),
        Operation::CreateGrant => respond(&call.create_grant(parse(body)?)?),
        Operation::ListGrants => respond(&call.list_grants(parse(body)?)?),
        Operation::ListRetirableGrants => respond(&call.list_retirable_grants(parse(body)?)?),
        Operation::RetireGrant => respond(&call.retire_grant(parse(body)?)?),
        Operation::RevokeGrant => respond(&call.revoke_grant(parse(body)?)?),
    }
}

/// One operation in progress: the service, the caller, and the audit details it fills.
pub(crate) struct Call<'a> {
    pub kms: &'a Kms,
    pub ctx: &'a RequestContext,
    pub audit: &'a mut AuditDetails,
}

impl Call<'_> {
    /// Notes `key` as a resource of this call in the audit record.
    pub fn touches(&mut self, key: &KeyEntry) {
        let resource = key_resource(key);
        if !self.audit.resources.contains(&resource) {
            self.audit.resources.push(resource);
        }
        if key.record.account != self.ctx.caller.principal.account
            && !self.audit.also_deliver_to.contains(&key.record.account)
        {
            self.audit.also_deliver_to.push(key.record.account.clone());
        }
    }
}

/// An empty JSON object, the response of operations that return nothing.
#[derive(Serialize)]
pub(crate) struct Empty {}

pub(crate) fn metadata(key: &KeyEntry) -> KeyMetadata {
    let record = &key.record;
    KeyMetadata {
        aws_account_id: record.account.clone(),
        key_id: record.id.to_string(),
        arn: key.arn.clone(),
        creation_date: record.created.epoch_seconds(),
        enabled: record.state == crate::KeyState::Enabled,
        description: record.description.clone(),
        key_usage: "ENCRYPT_DECRYPT",
        key_state: record.state.as_str(),
        deletion_date: record.deletion_date.map(|d| d.epoch_seconds()),
        origin: "AWS_KMS",
        key_manager: record.manager.as_str(),
        customer_master_key_spec: "SYMMETRIC_DEFAULT",
        key_spec: "SYMMETRIC_DEFAULT",
        encryption_algorithms: ["SYMMETRIC_DEFAULT"],
        multi_region: false,
        pending_deletion_window_in_days: record.pending_window_days,
        current_key_material_id: record.current_material().map(|m| m.material_id.clone()),
    }
}

pub(crate) const DEFAULT_LIMIT: usize = 100;

/// Checks the `Limit` and `Marker` members every List operation has.
pub(crate) fn check_paging(v: &mut Validator, limit: Option<i64>, marker: Option<&str>) {
    v.range("limit", limit, 1, 1000);
    v.length("marker", marker, 1, 1024);
}

/// Splits `items` (already in key order) into the page after `marker`.
/// Markers are opaque to clients: the base64 of the last key returned.
pub(crate) fn paginate<T, I: Serialize>(
    items: Vec<T>,
    sort_key: impl Fn(&T) -> String,
    limit: Option<i64>,
    marker: Option<&str>,
    wrap: impl FnOnce(Vec<T>) -> I,
) -> KmsResult<Page<I>> {
    let after = marker.map(decode_marker).transpose()?;
    let limit = limit
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(DEFAULT_LIMIT);
    let mut remaining: Vec<T> = items
        .into_iter()
        .filter(|item| after.as_ref().is_none_or(|a| sort_key(item) > *a))
        .collect();
    let truncated = remaining.len() > limit;
    remaining.truncate(limit);
    let next_marker = if truncated {
        remaining.last().map(|last| encode_marker(&sort_key(last)))
    } else {
        None
    };
    Ok(Page {
        items: wrap(remaining),
        truncated,
        next_marker,
    })
}

fn encode_marker(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes())
}

fn decode_marker(marker: &str) -> KmsResult<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(marker.as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| KmsError::InvalidMarker(marker.to_owned()))
}

/// Members whose values are maps of caller data: their keys are kept as written.
const MAP_MEMBERS: &[&str] = &[
    "EncryptionContext",
    "SourceEncryptionContext",
    "DestinationEncryptionContext",
    "EncryptionContextSubset",
    "EncryptionContextEquals",
];

/// Members that must never reach the audit trail.
const SECRET_MEMBERS: &[&str] = &["Plaintext", "CiphertextBlob"];

/// The request as CloudTrail shows it in `requestParameters`: member names in lower camel
/// case, plaintext and ciphertext removed. `None` for bodies that are not JSON objects.
pub(crate) fn audit_parameters(op: Operation, body: &[u8]) -> Option<serde_json::Value> {
    let serde_json::Value::Object(members) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let mut shown = serde_json::Map::new();
    for (name, value) in members {
        if SECRET_MEMBERS.contains(&name.as_str()) {
            continue;
        }
        shown.insert(lower_camel(&name), camel_case_keys(&name, value));
    }
    // CloudTrail always shows the algorithm of symmetric decryptions, even when implicit.
    if matches!(op, Operation::Decrypt | Operation::Encrypt)
        && !shown.contains_key("encryptionAlgorithm")
    {
        shown.insert("encryptionAlgorithm".into(), "SYMMETRIC_DEFAULT".into());
    }
    Some(serde_json::Value::Object(shown))
}

/// A response as CloudTrail shows it in `responseElements` (lower camel member names), for
/// the operations whose response AWS records (CreateKey, ScheduleKeyDeletion, CreateGrant).
pub(crate) fn audit_response(response: &impl Serialize) -> Option<serde_json::Value> {
    serde_json::to_value(response)
        .ok()
        .map(|value| camel_case_keys("", value))
}

fn camel_case_keys(member: &str, value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    if MAP_MEMBERS.contains(&member) {
        return value;
    }
    match value {
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .map(|(k, v)| {
                    let v = camel_case_keys(&k, v);
                    (lower_camel(&k), v)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| camel_case_keys("", v)).collect())
        }
        other => other,
    }
}

fn lower_camel(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_parameters_drop_secrets_and_keep_context_keys() {
        let body = br#"{"KeyId":"alias/x","Plaintext":"c2VjcmV0","EncryptionContext":{"Dept":"IT"},"Constraints":{"EncryptionContextSubset":{"Mixed":"v"}}}"#;
        let shown = audit_parameters(Operation::Encrypt, body).unwrap_or_default();
        assert_eq!(shown["keyId"], "alias/x");
        assert!(shown.get("plaintext").is_none());
        assert_eq!(shown["encryptionContext"]["Dept"], "IT");
        assert_eq!(
            shown["constraints"]["encryptionContextSubset"]["Mixed"],
            "v"
        );
        assert_eq!(shown["encryptionAlgorithm"], "SYMMETRIC_DEFAULT");
    }

    #[test]
    fn pagination_walks_all_items() {
        let items: Vec<u32> = (0..5).collect();
        let key = |i: &u32| format!("{i:03}");
        let first =
            paginate(items.clone(), key, Some(2), None, |v| v).unwrap_or_else(|_| unreachable!());
        assert_eq!(first.items, vec![0, 1]);
        assert!(first.truncated);
        let marker = first.next_marker.unwrap_or_default();
        let second = paginate(items.clone(), key, Some(2), Some(&marker), |v| v)
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(second.items, vec![2, 3]);
        let third = paginate(items, key, Some(2), second.next_marker.as_deref(), |v| v)
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(third.items, vec![4]);
        assert!(!third.truncated);
        assert!(third.next_marker.is_none());
        assert!(paginate(Vec::<u32>::new(), key, None, Some("!!"), |v| v).is_err());
    }
}
