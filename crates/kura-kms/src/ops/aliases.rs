//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases.
//!
//! Alias operations need permission on the alias (identity policies, resource = alias
//! ARN) and on every key involved (key policy), as in AWS.

use serde::Serialize;

use super::{Call, Empty, check_paging, paginate};
use crate::authz::RequestFacts;
use crate::error::{KmsError, KmsResult};
use crate::model::{AliasRecord, alias_arn};
use crate::operation::Operation;
use crate::resolve::Aliases;
use crate::validate::Validator;
use crate::wire::{AliasListEntry, AliasRequest, ListRequest, Page};

const RESERVED_PREFIX: &str = "alias/aws/";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AliasList {
    aliases: Vec<AliasListEntry>,
}

impl Call<'_> {
    pub fn create_alias(&mut self, request: AliasRequest) -> KmsResult<Empty> {
        let (name, target_id) = validate_alias_request(&request, true)?;
        let op = Operation::CreateAlias;
        if name.starts_with(RESERVED_PREFIX) {
            return Err(KmsError::InvalidAliasName(format!(
                "Alias names beginning with {RESERVED_PREFIX} are reserved for AWS managed keys."
            )));
        }
        let account = self.ctx.caller.principal.account.clone();
        let region = self.ctx.region.to_string();
        self.kms
            .authorize_identity(self.ctx, op.action(), &alias_arn(&region, &account, &name))?;
        let key = self.target(op, &target_id, Aliases::Refused, RequestFacts::default())?;
        if key.record.account != account {
            return Err(KmsError::NotFound(format!(
                "Key '{}' does not exist",
                key.arn
            )));
        }
        let now = self.ctx.time;
        self.kms.registry.apply(|registry, changes| {
            if registry.alias(&account, &name).is_some() {
                return Err(KmsError::AlreadyExists(format!(
                    "An alias with the name {} already exists",
                    alias_arn(&region, &account, &name)
                )));
            }
            changes.put_alias(AliasRecord {
                account: account.clone(),
                region: region.clone(),
                name: name.clone(),
                target: key.record.id,
                created: now,
                updated: now,
            });
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub fn update_alias(&mut self, request: AliasRequest) -> KmsResult<Empty> {
        let (name, target_id) = validate_alias_request(&request, true)?;
        let op = Operation::UpdateAlias;
        let account = self.ctx.caller.principal.account.clone();
        let region = self.ctx.region.to_string();
        let existing = self.existing_alias(&account, &region, &name)?;
        self.kms
            .authorize_identity(self.ctx, op.action(), &existing.arn())?;
        let old_key = self.kms.registry.key(&existing.target);
        if let Some(old_key) = &old_key {
            self.touches(old_key);
            self.kms
                .authorize_key(self.ctx, op.action(), old_key, &RequestFacts::default())?;
        }
        let new_key = self.target(op, &target_id, Aliases::Refused, RequestFacts::default())?;
        if new_key.record.account != account {
            return Err(KmsError::NotFound(format!(
                "Key '{}' does not exist",
                new_key.arn
            )));
        }
        let now = self.ctx.time;
        self.kms.registry.apply(|registry, changes| {
            let mut alias = registry
                .alias(&account, &name)
                .ok_or_else(|| alias_missing(&region, &account, &name))?;
            alias.target = new_key.record.id;
            alias.updated = now;
            changes.put_alias(alias);
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub fn delete_alias(&mut self, request: AliasRequest) -> KmsResult<Empty> {
        let (name, _) = validate_alias_request(&request, false)?;
        let op = Operation::DeleteAlias;
        let account = self.ctx.caller.principal.account.clone();
        let region = self.ctx.region.to_string();
        if name.starts_with(RESERVED_PREFIX) {
            return Err(KmsError::InvalidAliasName(format!(
                "Aliases beginning with {RESERVED_PREFIX} belong to AWS managed keys and cannot be deleted."
            )));
        }
        let existing = self.existing_alias(&account, &region, &name)?;
        self.kms
            .authorize_identity(self.ctx, op.action(), &existing.arn())?;
        if let Some(key) = self.kms.registry.key(&existing.target) {
            self.touches(&key);
            self.kms
                .authorize_key(self.ctx, op.action(), &key, &RequestFacts::default())?;
        }
        self.kms.registry.apply(|_, changes| {
            changes.delete_alias(&account, &name);
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub fn list_aliases(&mut self, request: ListRequest) -> KmsResult<Page<AliasList>> {
        let mut v = Validator::new();
        check_paging(&mut v, request.limit, request.marker.as_deref());
        v.length("keyId", request.key_id.as_deref(), 1, 2048);
        v.finish()?;
        self.kms
            .authorize_identity(self.ctx, Operation::ListAliases.action(), "*")?;
        let account = self.ctx.caller.principal.account.clone();
        let only_key = match request.key_id.as_deref() {
            Some(key_id) => Some(
                self.kms
                    .resolve(self.ctx, key_id, Aliases::Refused)?
                    .key
                    .record
                    .id,
            ),
            None => None,
        };
        let aliases: Vec<AliasRecord> = self
            .kms
            .registry
            .aliases_of(&account)
            .into_iter()
            .filter(|a| only_key.is_none_or(|k| a.target == k))
            .collect();
        paginate(
            aliases,
            |a| a.name.clone(),
            request.limit,
            request.marker.as_deref(),
            |aliases| AliasList {
                aliases: aliases
                    .iter()
                    .map(|a| AliasListEntry {
                        alias_name: a.name.clone(),
                        alias_arn: a.arn(),
                        target_key_id: Some(a.target.to_string()),
                        creation_date: Some(a.created.epoch_seconds()),
                        last_updated_date: Some(a.updated.epoch_seconds()),
                    })
                    .collect(),
            },
        )
    }

    fn existing_alias(&self, account: &str, region: &str, name: &str) -> KmsResult<AliasRecord> {
        self.kms
            .registry
            .alias(account, name)
            .ok_or_else(|| alias_missing(region, account, name))
    }
}

fn alias_missing(region: &str, account: &str, name: &str) -> KmsError {
    KmsError::NotFound(format!(
        "Alias {} is not found.",
        alias_arn(region, account, name)
    ))
}

/// Checks `AliasName` (and `TargetKeyId` when `needs_target`); returns both.
fn validate_alias_request(
    request: &AliasRequest,
    needs_target: bool,
) -> KmsResult<(String, String)> {
    let mut v = Validator::new();
    v.required("aliasName", &request.alias_name);
    v.length("aliasName", request.alias_name.as_deref(), 1, 256);
    if needs_target {
        v.required("targetKeyId", &request.target_key_id);
        v.length("targetKeyId", request.target_key_id.as_deref(), 1, 2048);
    }
    if let Some(name) = request.alias_name.as_deref() {
        let well_formed = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '_' | '-'));
        if !well_formed {
            v.problem(format!(
                "Value '{name}' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"
            ));
        }
    }
    v.finish()?;
    let name = request.alias_name.clone().unwrap_or_default();
    if !name.starts_with("alias/") || name.len() == "alias/".len() {
        return Err(KmsError::Validation(
            "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html".into(),
        ));
    }
    Ok((name, request.target_key_id.clone().unwrap_or_default()))
}
