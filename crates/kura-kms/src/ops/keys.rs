//! Key lifecycle: CreateKey, DescribeKey, ListKeys, UpdateKeyDescription, EnableKey,
//! DisableKey, ScheduleKeyDeletion, CancelKeyDeletion.

use std::sync::Arc;

use serde::Serialize;

use super::{Call, Empty, audit_response, check_paging, metadata, paginate};
use crate::KeyEventKind;
use crate::authz::RequestFacts;
use crate::error::{KmsError, KmsResult};
use crate::model::{KeyRecord, KeyState};
use crate::operation::Operation;
use crate::registry::KeyEntry;
use crate::resolve::Aliases;
use crate::validate::Validator;
use crate::wire::{
    CreateKeyRequest, KeyListEntry, KeyMetadataResponse, KeyRequest, ListRequest, Page,
};

const DEFAULT_PENDING_WINDOW_DAYS: i64 = 30;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Keys {
    keys: Vec<KeyListEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ScheduleKeyDeletionResponse {
    key_id: String,
    deletion_date: f64,
    key_state: &'static str,
    pending_window_in_days: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KeyIdResponse {
    pub key_id: String,
}

const KEY_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
    "ECC_NIST_EDWARDS25519",
];
const KEY_USAGES: &[&str] = &[
    "SIGN_VERIFY",
    "ENCRYPT_DECRYPT",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
];
const ORIGINS: &[&str] = &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];

impl Call<'_> {
    /// Resolves the key an operation targets, records it for the audit trail, authorizes
    /// the operation and checks the key's state: the preamble of every key operation.
    pub(crate) fn target(
        &mut self,
        op: Operation,
        key_id: &str,
        aliases: Aliases,
        facts: RequestFacts<'_>,
    ) -> KmsResult<Arc<KeyEntry>> {
        let resolved = self.kms.resolve(self.ctx, key_id, aliases)?;
        self.touches(&resolved.key);
        let facts = RequestFacts {
            request_alias: resolved.via_alias.as_deref(),
            ..facts
        };
        self.kms
            .authorize_key(self.ctx, op.action(), &resolved.key, &facts)?;
        op.check_state(&resolved.key.record)?;
        Ok(resolved.key)
    }

    /// Validates a required `KeyId` member and returns the targeted key.
    pub(crate) fn required_target(
        &mut self,
        op: Operation,
        key_id: &Option<String>,
        aliases: Aliases,
        validator: Validator,
    ) -> KmsResult<Arc<KeyEntry>> {
        let mut validator = validator;
        validator.required("keyId", key_id);
        validator.length("keyId", key_id.as_deref(), 1, 2048);
        validator.finish()?;
        let key_id = key_id.as_deref().unwrap_or_default();
        self.target(op, key_id, aliases, RequestFacts::default())
    }

    /// Changes a key's record atomically: re-reads the key under the registry's writer
    /// lock, re-checks that `op` is still allowed in its state, applies `change`.
    pub(crate) fn update_key(
        &self,
        key: &KeyEntry,
        op: Operation,
        change: impl FnOnce(&mut KeyRecord) -> KmsResult<()>,
    ) -> KmsResult<Arc<KeyEntry>> {
        let id = key.record.id;
        self.kms.registry.apply(|registry, changes| {
            let current = registry
                .key(&id)
                .ok_or_else(|| KmsError::NotFound(format!("Key '{}' does not exist", key.arn)))?;
            op.check_state(&current.record)?;
            let mut record = current.record.clone();
            change(&mut record)?;
            changes.put_key(record);
            Ok(())
        })?;
        self.kms
            .registry
            .key(&id)
            .ok_or_else(|| KmsError::Internal(format!("key {id} vanished after an update")))
    }

    pub fn create_key(&mut self, request: CreateKeyRequest) -> KmsResult<KeyMetadataResponse> {
        let mut v = Validator::new();
        v.length("description", request.description.as_deref(), 0, 8192);
        v.length("policy", request.policy.as_deref(), 1, 131_072);
        v.one_of("keySpec", request.key_spec.as_deref(), KEY_SPECS);
        v.one_of(
            "customerMasterKeySpec",
            request.customer_master_key_spec.as_deref(),
            KEY_SPECS,
        );
        v.one_of("keyUsage", request.key_usage.as_deref(), KEY_USAGES);
        v.one_of("origin", request.origin.as_deref(), ORIGINS);
        if request.key_spec.is_some() && request.customer_master_key_spec.is_some() {
            v.problem("You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated.");
        }
        if let Some(tags) = &request.tags {
            super::tags::validate_tags(&mut v, tags);
        }
        v.finish()?;
        refuse_unsupported_key_kinds(&request)?;
        self.kms
            .authorize_identity(self.ctx, Operation::CreateKey.action(), "*")?;
        if let Some(tags) = &request.tags {
            super::tags::check_tag_rules(tags, 0)?;
        }

        let account = self.ctx.caller.principal.account.clone();
        let mut record =
            self.kms
                .new_key_record(&account, self.ctx.region.as_str(), self.ctx.time)?;
        if let Some(policy) = &request.policy {
            let bypass = request.bypass_policy_lockout_safety_check.unwrap_or(false);
            self.check_new_policy(&record.arn(), &account, policy, bypass)?;
            record.policy = policy.clone();
        }
        record.description = request.description.unwrap_or_default();
        for tag in request.tags.unwrap_or_default() {
            record.tags.insert(tag.tag_key, tag.tag_value);
        }
        let id = record.id;
        self.kms.registry.apply(|_, changes| {
            changes.put_key(record);
            Ok(())
        })?;
        let key = self
            .kms
            .registry
            .key(&id)
            .ok_or_else(|| KmsError::Internal(format!("key {id} vanished after creation")))?;
        self.touches(&key);
        self.kms.publish(KeyEventKind::Created, &account, id);
        let response = KeyMetadataResponse {
            key_metadata: metadata(&key),
        };
        self.audit.response_elements = audit_response(&response);
        Ok(response)
    }

    pub fn describe_key(&mut self, request: KeyRequest) -> KmsResult<KeyMetadataResponse> {
        let mut v = Validator::new();
        check_grant_tokens(&mut v, request.grant_tokens.as_deref());
        super::grants::check_token_formats(request.grant_tokens.as_deref())?;
        let key = self.required_target(
            Operation::DescribeKey,
            &request.key_id,
            Aliases::Accepted,
            v,
        )?;
        Ok(KeyMetadataResponse {
            key_metadata: metadata(&key),
        })
    }

    pub fn list_keys(&mut self, request: ListRequest) -> KmsResult<Page<Keys>> {
        let mut v = Validator::new();
        check_paging(&mut v, request.limit, request.marker.as_deref());
        v.finish()?;
        self.kms
            .authorize_identity(self.ctx, Operation::ListKeys.action(), "*")?;
        let account = &self.ctx.caller.principal.account;
        let keys = self.kms.registry.keys_of(account, None, usize::MAX);
        paginate(
            keys,
            |k| k.record.id.to_string(),
            request.limit,
            request.marker.as_deref(),
            |keys| Keys {
                keys: keys
                    .iter()
                    .map(|k| KeyListEntry {
                        key_id: k.record.id.to_string(),
                        key_arn: k.arn.clone(),
                    })
                    .collect(),
            },
        )
    }

    pub fn update_key_description(&mut self, request: KeyRequest) -> KmsResult<Empty> {
        let mut v = Validator::new();
        v.required("description", &request.description);
        v.length("description", request.description.as_deref(), 0, 8192);
        let op = Operation::UpdateKeyDescription;
        let key = self.required_target(op, &request.key_id, Aliases::Refused, v)?;
        let description = request.description.unwrap_or_default();
        self.update_key(&key, op, |record| {
            record.description = description;
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub fn enable_key(&mut self, request: KeyRequest) -> KmsResult<Empty> {
        self.set_enabled(
            request,
            Operation::EnableKey,
            KeyState::Enabled,
            KeyEventKind::Enabled,
        )
    }

    pub fn disable_key(&mut self, request: KeyRequest) -> KmsResult<Empty> {
        self.set_enabled(
            request,
            Operation::DisableKey,
            KeyState::Disabled,
            KeyEventKind::Disabled,
        )
    }

    fn set_enabled(
        &mut self,
        request: KeyRequest,
        op: Operation,
        state: KeyState,
        event: KeyEventKind,
    ) -> KmsResult<Empty> {
        let key = self.required_target(op, &request.key_id, Aliases::Refused, Validator::new())?;
        let updated = self.update_key(&key, op, |record| {
            record.state = state;
            Ok(())
        })?;
        if key.record.state != state {
            self.kms
                .publish(event, &updated.record.account, updated.record.id);
        }
        Ok(Empty {})
    }

    pub fn schedule_key_deletion(
        &mut self,
        request: KeyRequest,
    ) -> KmsResult<ScheduleKeyDeletionResponse> {
        let mut v = Validator::new();
        v.range("pendingWindowInDays", request.pending_window_in_days, 7, 30);
        let op = Operation::ScheduleKeyDeletion;
        let key = self.required_target(op, &request.key_id, Aliases::Refused, v)?;
        let days = request
            .pending_window_in_days
            .unwrap_or(DEFAULT_PENDING_WINDOW_DAYS);
        let window = u32::try_from(days).unwrap_or(30);
        let deletion_date = self.ctx.time.plus_days(days);
        let updated = self.update_key(&key, op, |record| {
            record.state = KeyState::PendingDeletion;
            record.deletion_date = Some(deletion_date);
            record.pending_window_days = Some(window);
            Ok(())
        })?;
        self.kms.publish(
            KeyEventKind::DeletionScheduled,
            &updated.record.account,
            updated.record.id,
        );
        let response = ScheduleKeyDeletionResponse {
            key_id: updated.arn.clone(),
            deletion_date: deletion_date.epoch_seconds(),
            key_state: KeyState::PendingDeletion.as_str(),
            pending_window_in_days: window,
        };
        self.audit.response_elements = audit_response(&response);
        Ok(response)
    }

    pub fn cancel_key_deletion(&mut self, request: KeyRequest) -> KmsResult<KeyIdResponse> {
        let op = Operation::CancelKeyDeletion;
        let key = self.required_target(op, &request.key_id, Aliases::Refused, Validator::new())?;
        // AWS leaves a key whose deletion was cancelled disabled, not enabled.
        let updated = self.update_key(&key, op, |record| {
            record.state = KeyState::Disabled;
            record.deletion_date = None;
            record.pending_window_days = None;
            Ok(())
        })?;
        self.kms.publish(
            KeyEventKind::DeletionCancelled,
            &updated.record.account,
            updated.record.id,
        );
        Ok(KeyIdResponse {
            key_id: updated.arn.clone(),
        })
    }
}

pub(crate) fn check_grant_tokens(v: &mut Validator, tokens: Option<&[String]>) {
    if let Some(tokens) = tokens {
        if tokens.len() > 10 {
            v.problem(format!(
                "Value '{}' at 'grantTokens' failed to satisfy constraint: Member must have length less than or equal to 10",
                tokens.len()
            ));
        }
        for token in tokens {
            v.length("grantTokens", Some(token), 1, 8192);
        }
    }
}

/// kura serves symmetric encryption keys with KMS-generated material only; other kinds
/// of key are refused clearly rather than half-supported.
fn refuse_unsupported_key_kinds(request: &CreateKeyRequest) -> KmsResult<()> {
    let spec = request
        .key_spec
        .as_deref()
        .or(request.customer_master_key_spec.as_deref())
        .unwrap_or("SYMMETRIC_DEFAULT");
    if spec != "SYMMETRIC_DEFAULT" {
        return Err(KmsError::UnsupportedOperation(format!(
            "KeySpec {spec} is not supported by kura: only SYMMETRIC_DEFAULT keys are."
        )));
    }
    if let Some(usage) = request
        .key_usage
        .as_deref()
        .filter(|u| *u != "ENCRYPT_DECRYPT")
    {
        return Err(KmsError::InvalidKeyUsage(format!(
            "KeyUsage {usage} is not valid for KeySpec SYMMETRIC_DEFAULT; use ENCRYPT_DECRYPT."
        )));
    }
    if let Some(origin) = request.origin.as_deref().filter(|o| *o != "AWS_KMS") {
        return Err(KmsError::UnsupportedOperation(format!(
            "Origin {origin} is not supported by kura: key material is always generated by the service (AWS_KMS)."
        )));
    }
    if request.custom_key_store_id.is_some() {
        return Err(KmsError::UnsupportedOperation(
            "Custom key stores are not supported by kura.".into(),
        ));
    }
    if request.multi_region == Some(true) {
        return Err(KmsError::UnsupportedOperation(
            "Multi-Region keys are not supported by kura: a server serves one region.".into(),
        ));
    }
    Ok(())
}
