//! Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant.
//!
//! A grant lets its grantee use one key for the listed operations, optionally only with
//! certain encryption contexts. kura's grants take effect at once (AWS's are eventually
//! consistent, which is why it has grant tokens); tokens are still issued, validated and
//! accepted so that clients written for AWS work unchanged.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::keys::check_grant_tokens;
use super::{Call, Empty, check_paging, paginate};
use crate::authz::{NewGrant, RequestFacts};
use crate::error::{KmsError, KmsResult};
use crate::model::{GrantConstraints, GrantRecord};
use crate::operation::Operation;
use crate::resolve::Aliases;
use crate::validate::Validator;
use crate::wire::Page;
use crate::{KeyEventKind, Kms};

/// Grants one key may have, as AWS.
const MAX_GRANTS_PER_KEY: usize = 50_000;
const TOKEN_PREFIX: &str = "kura-grant-token:1:";

/// Grant operations valid for a symmetric encryption key.
const SYMMETRIC_GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
];
/// Every grant operation AWS defines.
const ALL_GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct GrantRequest {
    pub key_id: Option<String>,
    pub grantee_principal: Option<String>,
    pub retiring_principal: Option<String>,
    pub operations: Option<Vec<String>>,
    pub constraints: Option<GrantConstraints>,
    pub grant_tokens: Option<Vec<String>>,
    pub name: Option<String>,
    pub dry_run: Option<bool>,
    pub grant_id: Option<String>,
    pub grant_token: Option<String>,
    pub limit: Option<i64>,
    pub marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateGrantResponse {
    grant_token: String,
    grant_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GrantList {
    grants: Vec<GrantListEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GrantListEntry {
    key_id: String,
    grant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    creation_date: f64,
    grantee_principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retiring_principal: Option<String>,
    issuing_account: String,
    operations: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    constraints: Option<GrantConstraints>,
}

impl Call<'_> {
    pub fn create_grant(&mut self, request: GrantRequest) -> KmsResult<CreateGrantResponse> {
        let mut v = Validator::new();
        v.required("keyId", &request.key_id);
        v.length("keyId", request.key_id.as_deref(), 1, 2048);
        v.required("granteePrincipal", &request.grantee_principal);
        check_principal(
            &mut v,
            "granteePrincipal",
            request.grantee_principal.as_deref(),
        );
        check_principal(
            &mut v,
            "retiringPrincipal",
            request.retiring_principal.as_deref(),
        );
        v.required("operations", &request.operations);
        for op in request.operations.iter().flatten() {
            v.one_of("operations", Some(op), ALL_GRANT_OPERATIONS);
        }
        if let Some(name) = request.name.as_deref() {
            v.length("name", Some(name), 1, 256);
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '_' | '-'))
            {
                v.problem(format!(
                    "Value '{name}' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
                ));
            }
        }
        check_grant_tokens(&mut v, request.grant_tokens.as_deref());
        v.finish()?;
        check_token_formats(request.grant_tokens.as_deref())?;
        let operations = normalize_operations(request.operations.unwrap_or_default())?;
        let constraints = request
            .constraints
            .filter(|c| *c != GrantConstraints::default());
        let grantee = request.grantee_principal.unwrap_or_default();
        let new_grant = NewGrant {
            operations: &operations,
            grantee: &grantee,
            retiring: request.retiring_principal.as_deref(),
            constraints: constraints.as_ref(),
        };
        let facts = RequestFacts {
            new_grant: Some(&new_grant),
            ..RequestFacts::default()
        };
        let key_id = request.key_id.unwrap_or_default();
        let key = self.target(Operation::CreateGrant, &key_id, Aliases::Refused, facts)?;
        if request.dry_run == Some(true) {
            return Err(KmsError::DryRun);
        }

        let record = GrantRecord {
            grant_id: kura_crypto::random_hex(32)?,
            key_id: key.record.id,
            key_account: key.record.account.clone(),
            name: request.name,
            grantee_principal: grantee,
            retiring_principal: request.retiring_principal,
            operations,
            constraints,
            created: self.ctx.time,
            for_aws_resource: self.ctx.via_service.is_some(),
        };
        let grant_id = self.kms.registry.apply(|registry, changes| {
            let existing = registry.grants_of(&record.key_id);
            // Same name and same properties: a retry of an earlier call, not a new grant.
            if let Some(same) = existing
                .iter()
                .find(|g| record.name.is_some() && same_grant(g, &record))
            {
                return Ok(same.grant_id.clone());
            }
            if existing.len() >= MAX_GRANTS_PER_KEY {
                return Err(KmsError::LimitExceeded(format!(
                    "The key {} already has the maximum of {MAX_GRANTS_PER_KEY} grants.",
                    key.arn
                )));
            }
            changes.put_grant(record.clone());
            Ok(record.grant_id.clone())
        })?;
        self.audit.response_elements = Some(serde_json::json!({ "grantId": grant_id }));
        Ok(CreateGrantResponse {
            grant_token: grant_token(key.record.id, &grant_id)?,
            grant_id,
        })
    }

    pub fn list_grants(&mut self, request: GrantRequest) -> KmsResult<Page<GrantList>> {
        let mut v = Validator::new();
        check_paging(&mut v, request.limit, request.marker.as_deref());
        v.length("grantId", request.grant_id.as_deref(), 1, 128);
        check_principal(
            &mut v,
            "granteePrincipal",
            request.grantee_principal.as_deref(),
        );
        let key =
            self.required_target(Operation::ListGrants, &request.key_id, Aliases::Refused, v)?;
        let grants: Vec<GrantRecord> = self
            .kms
            .registry
            .grants_of(&key.record.id)
            .into_iter()
            .filter(|g| request.grant_id.as_ref().is_none_or(|id| *id == g.grant_id))
            .filter(|g| {
                request
                    .grantee_principal
                    .as_ref()
                    .is_none_or(|p| *p == g.grantee_principal)
            })
            .collect();
        self.grant_page(grants, request.limit, request.marker.as_deref())
    }

    pub fn list_retirable_grants(&mut self, request: GrantRequest) -> KmsResult<Page<GrantList>> {
        let mut v = Validator::new();
        check_paging(&mut v, request.limit, request.marker.as_deref());
        v.required("retiringPrincipal", &request.retiring_principal);
        check_principal(
            &mut v,
            "retiringPrincipal",
            request.retiring_principal.as_deref(),
        );
        v.finish()?;
        self.kms
            .authorize_identity(self.ctx, Operation::ListRetirableGrants.action(), "*")?;
        let retiring = request.retiring_principal.unwrap_or_default();
        let mut grants: Vec<GrantRecord> = self
            .kms
            .registry
            .all_grants()
            .into_iter()
            .filter(|g| g.retiring_principal.as_deref() == Some(retiring.as_str()))
            .collect();
        grants.sort_by_key(GrantRecord::store_key);
        self.grant_page(grants, request.limit, request.marker.as_deref())
    }

    pub fn retire_grant(&mut self, request: GrantRequest) -> KmsResult<Empty> {
        let mut v = Validator::new();
        v.length("grantToken", request.grant_token.as_deref(), 1, 8192);
        v.length("grantId", request.grant_id.as_deref(), 1, 128);
        v.length("keyId", request.key_id.as_deref(), 1, 2048);
        v.finish()?;
        let (key, grant_id) = match (&request.grant_token, &request.key_id, &request.grant_id) {
            (Some(token), _, _) => {
                let (key_id, grant_id) = parse_grant_token(token)?;
                let key = self
                    .kms
                    .registry
                    .key(&key_id)
                    .ok_or_else(|| grant_not_found(&grant_id))?;
                (key, grant_id)
            }
            (None, Some(key_id), Some(grant_id)) => {
                let key = self.kms.resolve(self.ctx, key_id, Aliases::Refused)?.key;
                (key, grant_id.clone())
            }
            _ => {
                return Err(KmsError::Validation(
                    "Specify either GrantToken, or both KeyId and GrantId.".into(),
                ));
            }
        };
        self.touches(&key);
        let grant = find_grant(self.kms, &key.record.id, &grant_id)?;
        if !self.may_retire(&grant, &key.arn) {
            return Err(KmsError::AccessDenied(format!(
                "User: {} is not authorized to perform: kms:RetireGrant on resource: {} because it is neither the retiring principal nor a grantee allowed to retire grant {}",
                self.ctx.caller.principal.arn, key.arn, grant.grant_id
            )));
        }
        if request.dry_run == Some(true) {
            return Err(KmsError::DryRun);
        }
        self.remove_grant(grant)?;
        Ok(Empty {})
    }

    pub fn revoke_grant(&mut self, request: GrantRequest) -> KmsResult<Empty> {
        let mut v = Validator::new();
        v.required("grantId", &request.grant_id);
        v.length("grantId", request.grant_id.as_deref(), 1, 128);
        let key =
            self.required_target(Operation::RevokeGrant, &request.key_id, Aliases::Refused, v)?;
        let grant = find_grant(
            self.kms,
            &key.record.id,
            request.grant_id.as_deref().unwrap_or_default(),
        )?;
        if request.dry_run == Some(true) {
            return Err(KmsError::DryRun);
        }
        self.remove_grant(grant)?;
        Ok(Empty {})
    }

    fn remove_grant(&self, grant: GrantRecord) -> KmsResult<()> {
        let (account, key_id) = (grant.key_account.clone(), grant.key_id);
        self.kms.registry.apply(|_, changes| {
            changes.delete_grant(grant);
            Ok(())
        })?;
        self.kms
            .publish(KeyEventKind::GrantRemoved, &account, key_id);
        Ok(())
    }

    /// Who may retire a grant (AWS): its retiring principal; its grantee when the grant
    /// includes RetireGrant; a principal of the account the grant was created in whose
    /// identity policies allow kms:RetireGrant.
    fn may_retire(&self, grant: &GrantRecord, key_arn: &str) -> bool {
        let principal = &self.ctx.caller.principal;
        let names_caller = |name: &str| {
            name == principal.arn
                || matches!(&principal.kind, kura_policy::PrincipalKind::AssumedRole { role_arn, .. } if role_arn == name)
        };
        grant
            .retiring_principal
            .as_deref()
            .is_some_and(names_caller)
            || (names_caller(&grant.grantee_principal)
                && grant.operations.iter().any(|op| op == "RetireGrant"))
            || (principal.account == grant.key_account
                && self
                    .kms
                    .authorize_identity(self.ctx, Operation::RetireGrant.action(), key_arn)
                    .is_ok())
    }

    fn grant_page(
        &self,
        grants: Vec<GrantRecord>,
        limit: Option<i64>,
        marker: Option<&str>,
    ) -> KmsResult<Page<GrantList>> {
        let region = self.ctx.region.to_string();
        paginate(grants, GrantRecord::store_key, limit, marker, |grants| {
            GrantList {
                grants: grants
                    .into_iter()
                    .map(|g| GrantListEntry {
                        key_id: format!("arn:aws:kms:{region}:{}:key/{}", g.key_account, g.key_id),
                        issuing_account: format!("arn:aws:iam::{}:root", g.key_account),
                        grant_id: g.grant_id,
                        name: g.name,
                        creation_date: g.created.epoch_seconds(),
                        grantee_principal: g.grantee_principal,
                        retiring_principal: g.retiring_principal,
                        operations: g.operations,
                        constraints: g.constraints,
                    })
                    .collect(),
            }
        })
    }
}

fn check_principal(v: &mut Validator, member: &str, value: Option<&str>) {
    v.length(member, value, 1, 256);
    if let Some(value) = value
        && !value
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || "+=,.@:/-".contains(c))
    {
        v.problem(format!(
            "Value '{value}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[\\w+=,.@:/-]+$"
        ));
    }
}

/// Deduplicates and checks grant operations against what a symmetric key supports.
fn normalize_operations(mut operations: Vec<String>) -> KmsResult<Vec<String>> {
    if operations.is_empty() {
        return Err(KmsError::Validation(
            "1 validation error detected: Value '[]' at 'operations' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
        ));
    }
    operations.sort();
    operations.dedup();
    let invalid: Vec<&str> = operations
        .iter()
        .map(String::as_str)
        .filter(|op| !SYMMETRIC_GRANT_OPERATIONS.contains(op))
        .collect();
    if !invalid.is_empty() {
        return Err(KmsError::Validation(format!(
            "Grant operations {} are not valid for a symmetric encryption KMS key (KeySpec SYMMETRIC_DEFAULT).",
            invalid.join(", ")
        )));
    }
    Ok(operations)
}

fn same_grant(a: &GrantRecord, b: &GrantRecord) -> bool {
    a.name == b.name
        && a.grantee_principal == b.grantee_principal
        && a.retiring_principal == b.retiring_principal
        && a.operations == b.operations
        && a.constraints == b.constraints
}

fn find_grant(kms: &Kms, key: &uuid::Uuid, grant_id: &str) -> KmsResult<GrantRecord> {
    if grant_id.len() != 64 || !grant_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KmsError::InvalidGrantId(format!(
            "Invalid grant ID: {grant_id}"
        )));
    }
    kms.registry
        .grants_of(key)
        .into_iter()
        .find(|g| g.grant_id == grant_id)
        .ok_or_else(|| grant_not_found(grant_id))
}

fn grant_not_found(grant_id: &str) -> KmsError {
    KmsError::NotFound(format!("Grant ID {grant_id} not found"))
}

/// An opaque token naming a grant, returned by CreateGrant.
fn grant_token(key: uuid::Uuid, grant_id: &str) -> KmsResult<String> {
    let nonce = kura_crypto::random_hex(16)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{TOKEN_PREFIX}{key}:{grant_id}:{nonce}")))
}

fn parse_grant_token(token: &str) -> KmsResult<(uuid::Uuid, String)> {
    let invalid = || KmsError::InvalidGrantToken("The grant token is not valid.".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let rest = text.strip_prefix(TOKEN_PREFIX).ok_or_else(invalid)?;
    let mut parts = rest.split(':');
    let (Some(key), Some(grant), Some(_nonce), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let key = uuid::Uuid::try_parse(key).map_err(|_| invalid())?;
    Ok((key, grant.to_owned()))
}

/// Every token a request carries must be one kura issued.
pub(crate) fn check_token_formats(tokens: Option<&[String]>) -> KmsResult<()> {
    for token in tokens.unwrap_or_default() {
        parse_grant_token(token)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let key = uuid::Uuid::new_v4();
        let id = "ab".repeat(32);
        let token = grant_token(key, &id).unwrap_or_default();
        assert!(matches!(parse_grant_token(&token), Ok((k, g)) if k == key && g == id));
        for bad in [
            "",
            "abc",
            "!!!!",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("other:1:2:3"),
        ] {
            assert!(matches!(
                parse_grant_token(bad),
                Err(KmsError::InvalidGrantToken(_))
            ));
        }
    }

    #[test]
    fn operations_are_checked_for_symmetric_keys() {
        assert!(
            normalize_operations(vec!["Encrypt".into(), "Encrypt".into()])
                .is_ok_and(|ops| ops == ["Encrypt"])
        );
        assert!(normalize_operations(vec!["Sign".into()]).is_err());
        assert!(normalize_operations(vec![]).is_err());
    }
}
