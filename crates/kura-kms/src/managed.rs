//! AWS managed keys (`alias/aws/<service>`): created in an account the first time the
//! alias is used, owned by the service, with AWS's fixed key policy.
//!
//! The policy lets principals of the account use the key only *through* the service
//! (`kms:ViaService` + `kms:CallerAccount`) and gives the account read access to its
//! metadata; it never delegates management to IAM. So users cannot disable, delete,
//! rotate or re-policy these keys: the policy itself refuses them.

use kura_edge::RequestContext;

use crate::Kms;
use crate::authz::via_service_name;
use crate::error::KmsResult;
use crate::model::{AliasRecord, KeyManager, RotationSettings};

/// A service whose managed key kura can create.
struct ManagedService {
    /// The alias, `alias/aws/rds`.
    alias: &'static str,
    /// The service principal that may use the key on callers' behalf.
    principal: &'static str,
    description: &'static str,
    /// The policy `Id` AWS uses for this service's keys.
    policy_id: &'static str,
    /// The `Sid` of the statement allowing use through the service.
    use_sid: &'static str,
}

const MANAGED_SERVICES: &[ManagedService] = &[ManagedService {
    alias: "alias/aws/rds",
    principal: "rds.amazonaws.com",
    description: "Default key that protects my RDS database volumes when no other key is defined",
    policy_id: "auto-rds-2",
    use_sid: "Allow access through RDS for all principals in the account that are authorized to use RDS",
}];

/// AWS managed keys rotate every year, and users cannot change that.
pub(crate) const MANAGED_ROTATION_DAYS: u32 = 365;

fn managed_policy(service: &ManagedService, account: &str, region: &str) -> String {
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Id": service.policy_id,
        "Statement": [
            {
                "Sid": service.use_sid,
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": [
                    "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                    "kms:CreateGrant", "kms:ListGrants", "kms:DescribeKey"
                ],
                "Resource": "*",
                "Condition": {"StringEquals": {
                    "kms:ViaService": via_service_name(service.principal, region),
                    "kms:CallerAccount": account
                }}
            },
            {
                "Sid": "Allow direct access to key metadata to the account",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
                "Action": ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"],
                "Resource": "*"
            }
        ]
    });
    serde_json::to_string_pretty(&policy).unwrap_or_default()
}

impl Kms {
    /// Returns the alias of the AWS managed key named `alias_name` in the caller's account,
    /// creating the key first if this is its first use. `None` if `alias_name` is not the
    /// managed alias of a service kura knows.
    pub(crate) fn ensure_managed_key(
        &self,
        ctx: &RequestContext,
        alias_name: &str,
    ) -> KmsResult<Option<AliasRecord>> {
        let Some(service) = MANAGED_SERVICES.iter().find(|s| s.alias == alias_name) else {
            return Ok(None);
        };
        let account = ctx.caller.principal.account.clone();
        let region = ctx.region.to_string();
        let now = self.clock.now();
        let created = self.registry.apply(|registry, changes| {
            // Another request may have created it while this one waited for the lock.
            if let Some(existing) = registry.alias(&account, alias_name) {
                return Ok((existing, None));
            }
            let mut record = self.new_key_record(&account, &region, now)?;
            record.description = service.description.to_owned();
            record.manager = KeyManager::Aws;
            record.policy = managed_policy(service, &account, &region);
            record.rotation = RotationSettings {
                enabled: true,
                period_days: Some(MANAGED_ROTATION_DAYS),
                next_rotation: Some(now.plus_days(i64::from(MANAGED_ROTATION_DAYS))),
                on_demand_count: 0,
            };
            let alias = AliasRecord {
                account: account.clone(),
                region: region.clone(),
                name: alias_name.to_owned(),
                target: record.id,
                created: now,
                updated: now,
            };
            let arn = record.arn();
            changes.put_key(record).put_alias(alias.clone());
            Ok((alias, Some(arn)))
        })?;
        let (alias, new_key_arn) = created;
        if let Some(arn) = new_key_arn {
            tracing::info!(key = %arn, alias = alias_name, "created AWS managed key");
            self.publish(crate::KeyEventKind::Created, &alias.account, alias.target);
        }
        Ok(Some(alias))
    }
}
