//! Key state drives database state. The watcher listens to the KMS's key events and, for
//! every database under an affected key, asks the KMS whether the service can still
//! decrypt the database's volume key (as the service, under its grant): if not, the
//! database is locked at once; if it can again, the database unlocks by itself. A slow
//! periodic pass catches what no key event announces (an IAM or key-policy change in
//! another account) and moves long-locked databases to the terminal state.

use kura_kms::KeyEventKind;
use tokio::sync::broadcast::error::RecvError;

use crate::Rds;
use crate::lifecycle::Unit;
use crate::model::status;

/// Statuses in which a database is meant to be serving.
const SERVING: &[&str] = &[
    status::AVAILABLE,
    status::BACKING_UP,
    status::MODIFYING,
    status::REBOOTING,
    status::STARTING,
];

impl Rds {
    /// First step of a restart, before the API serves: databases that were serving are
    /// marked `starting`, interrupted creations `failed`. Returns the units to bring up.
    pub(crate) fn mark_restarting(&self) -> crate::RdsResult<Vec<Unit>> {
        let mut to_restore = Vec::new();
        for unit in self.all_units() {
            let Some(view) = self.view(&unit) else {
                continue;
            };
            if !view.storage.provisioned {
                self.set_status(&unit, status::FAILED)?;
            } else if SERVING.contains(&view.status.as_str()) {
                if self.has_engine(&unit) {
                    self.set_status(&unit, status::STARTING)?;
                    to_restore.push(unit);
                } else {
                    self.set_status(&unit, status::AVAILABLE)?;
                }
            } else if view.status == status::INACCESSIBLE_RECOVERABLE {
                to_restore.push(unit);
            }
        }
        Ok(to_restore)
    }

    /// Second step of a restart: engines start again (a database whose key no longer
    /// works stays, or becomes, locked).
    pub(crate) async fn recover_after_restart(&self, units: Vec<Unit>) {
        for unit in units {
            let locked = self
                .view(&unit)
                .is_some_and(|v| v.status == status::INACCESSIBLE_RECOVERABLE);
            if locked && !self.has_engine(&unit) {
                continue;
            }
            if let Err(error) = self.bring_up(&unit).await {
                tracing::warn!(database = unit.id(), %error, "database not restored to service");
            }
        }
    }

    /// Whether a unit should have a running engine (a cluster needs an instance).
    pub(crate) fn has_engine(&self, unit: &Unit) -> bool {
        match unit {
            Unit::Cluster { account, id } => !self.state.members_of(account, id).is_empty(),
            Unit::Instance { .. } => true,
        }
    }

    pub(crate) async fn watch_keys(&self) {
        let mut events = self.kms.subscribe();
        let mut ticker = tokio::time::interval(self.settings.key_check_interval);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) if event.kind == KeyEventKind::Deleted => self.key_deleted(&event.key_arn).await,
                    Ok(event) if affects_databases(&event.kind) => self.recheck(Some(&event.key_arn)).await,
                    Ok(_) => {}
                    // Missed events: check every database.
                    Err(RecvError::Lagged(_)) => self.recheck(None).await,
                    Err(RecvError::Closed) => return,
                },
                _ = ticker.tick() => {
                    self.recheck(None).await;
                    let now = self.clock.now();
                    for unit in self.all_units() {
                        if let Err(error) = self.expire_if_overdue(&unit, now).await {
                            tracing::warn!(database = unit.id(), %error, "could not expire a locked database");
                        }
                    }
                }
            }
        }
    }

    /// A deleted key can never decrypt again: its databases become terminal at once.
    async fn key_deleted(&self, key_arn: &str) {
        for unit in self.all_units() {
            let Some(view) = self
                .view(&unit)
                .filter(|v| v.storage.kms_key_arn.as_deref() == Some(key_arn))
            else {
                continue;
            };
            let outcome = async {
                self.runtime.stop(&view.spec.resource_id).await?;
                self.set_status(&unit, status::INACCESSIBLE)
            };
            match outcome.await {
                Ok(()) => self.event(
                    &unit,
                    &view.arn,
                    "The KMS key of this database was deleted; its data can no longer be decrypted.",
                    "failure",
                ),
                Err(error) => tracing::warn!(database = unit.id(), %error, "could not mark a database terminal"),
            }
        }
    }

    /// Re-checks key access for the databases under `key_arn` (all encrypted ones if
    /// `None`), locking or unlocking them as needed.
    async fn recheck(&self, key_arn: Option<&str>) {
        for unit in self.all_units() {
            let Some(view) = self.view(&unit) else {
                continue;
            };
            let Some(arn) = view.storage.kms_key_arn.as_deref() else {
                continue;
            };
            if key_arn.is_some_and(|k| k != arn) || !view.storage.provisioned {
                continue;
            }
            let serving = SERVING.contains(&view.status.as_str());
            let recoverable = view.status == status::INACCESSIBLE_RECOVERABLE;
            let stopped_with_key = view.status == status::STOPPED;
            if !(serving || recoverable) || stopped_with_key {
                continue;
            }
            let usable = self.keys.unwrap(unit.account(), &view.storage).await;
            let outcome = match (usable, recoverable) {
                (Err(error), false) => {
                    self.lock(&unit, &format!("{}: {}", error.code, error.message))
                        .await
                }
                (Ok(_), true) if self.has_engine(&unit) => self.bring_up(&unit).await,
                (Ok(_), true) => self
                    .update_storage_and_status(&unit, status::AVAILABLE, |s| s.locked_since = None),
                _ => Ok(()),
            };
            if let Err(error) = outcome {
                tracing::warn!(database = unit.id(), %error, "key state change not applied");
            }
        }
    }
}

fn affects_databases(kind: &KeyEventKind) -> bool {
    !matches!(kind, KeyEventKind::Created | KeyEventKind::Rotated)
}
