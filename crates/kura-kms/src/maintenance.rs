//! Work the KMS does on its own schedule: deleting keys whose waiting period is over and
//! rotating keys whose rotation date has come.

use kura_edge::{AuditResource, ServiceEvent};
use kura_types::{Arn, Timestamp};

use crate::error::KmsResult;
use crate::model::KeyState;
use crate::{KeyEventKind, Kms};

/// What one maintenance pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub deleted: Vec<String>,
    pub rotated: Vec<String>,
}

impl Kms {
    /// Deletes every key pending deletion whose date has passed (with its aliases) and
    /// rotates every enabled key whose automatic rotation is due, as of the service clock.
    pub fn run_maintenance(&self) -> KmsResult<MaintenanceReport> {
        let now = self.clock.now();
        let mut report = MaintenanceReport::default();
        for key in self.registry.all_keys() {
            let record = &key.record;
            if record.state == KeyState::PendingDeletion {
                if record.deletion_date.is_some_and(|date| date <= now)
                    && self.delete_if_due(record.id, now)?
                {
                    report.deleted.push(key.arn.clone());
                }
            } else if self.rotate_if_due(record.id, now)? {
                report.rotated.push(key.arn.clone());
            }
        }
        Ok(report)
    }

    /// The CloudTrail events of a maintenance pass (`DeleteKey`, `RotateKey`): work KMS
    /// does on its own is audited like calls, as AWS records it (`AwsServiceEvent`).
    pub fn service_events(&self, report: &MaintenanceReport) -> Vec<ServiceEvent> {
        let named = |name: &'static str| move |arn: &String| (name, arn.clone());
        let time = self.clock.now();
        report
            .deleted
            .iter()
            .map(named("DeleteKey"))
            .chain(report.rotated.iter().map(named("RotateKey")))
            .filter_map(|(name, arn)| {
                let parsed = Arn::parse(&arn).ok()?;
                let key_id = parsed.resource.strip_prefix("key/")?.to_owned();
                Some(ServiceEvent {
                    account: parsed.account.clone(),
                    region: self.region.clone(),
                    time,
                    event_source: "kms.amazonaws.com",
                    event_name: name.to_owned(),
                    resources: vec![AuditResource {
                        account_id: parsed.account,
                        resource_type: "AWS::KMS::Key".to_owned(),
                        arn,
                    }],
                    service_event_details: Some(serde_json::json!({ "keyId": key_id })),
                    read_only: false,
                })
            })
            .collect()
    }

    /// Deletes a key whose deletion date has passed, with its aliases and grants.
    fn delete_if_due(&self, key_id: uuid::Uuid, now: Timestamp) -> KmsResult<bool> {
        let deleted = self.registry.apply(|registry, changes| {
            let Some(key) = registry.key(&key_id) else {
                return Ok(None);
            };
            let record = &key.record;
            let due = record.state == KeyState::PendingDeletion
                && record.deletion_date.is_some_and(|d| d <= now);
            if !due {
                return Ok(None);
            }
            for alias in registry.alias_names_of_key(&record.account, key_id) {
                changes.delete_alias(&record.account, &alias);
            }
            for grant in registry.grants_of(&key_id) {
                changes.delete_grant(grant);
            }
            changes.delete_key(key_id);
            Ok(Some((record.account.clone(), key.arn.clone())))
        })?;
        match deleted {
            Some((account, arn)) => {
                tracing::info!(key = %arn, "deleted key at the end of its waiting period");
                self.publish(KeyEventKind::Deleted, &account, key_id);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
