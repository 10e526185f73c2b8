//! The data-plane flows shared by the API and the key watcher: bringing a database up,
//! locking it when its key stops working, unlocking it when the key works again.

use kura_types::Timestamp;

use crate::Rds;
use crate::error::{RdsError, RdsResult};
use crate::model::{Engine, EventRecord, StorageRecord, status};
use crate::runtime::UnitSpec;

/// A database with storage and an engine: an Aurora cluster, or a standalone instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    Cluster { account: String, id: String },
    Instance { account: String, id: String },
}

/// What the flows need to know about a unit, read from its record.
pub(crate) struct UnitView {
    pub spec: UnitSpec,
    pub storage: StorageRecord,
    pub status: String,
    pub arn: String,
}

impl Unit {
    pub fn account(&self) -> &str {
        match self {
            Unit::Cluster { account, .. } | Unit::Instance { account, .. } => account,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Unit::Cluster { id, .. } | Unit::Instance { id, .. } => id,
        }
    }

    fn source_type(&self) -> &'static str {
        match self {
            Unit::Cluster { .. } => "db-cluster",
            Unit::Instance { .. } => "db-instance",
        }
    }
}

impl Rds {
    pub(crate) fn view(&self, unit: &Unit) -> Option<UnitView> {
        match unit {
            Unit::Cluster { account, id } => {
                let c = self.state.cluster(account, id)?;
                Some(UnitView {
                    spec: UnitSpec {
                        resource_id: c.resource_id.clone(),
                        engine: Engine::parse(&c.engine).ok()?,
                        port: c.storage.port,
                        master_username: c.master_username.clone(),
                        initial_database: c.database_name.clone(),
                        encrypted: c.storage.encrypted,
                    },
                    arn: c.arn(),
                    status: c.status,
                    storage: c.storage,
                })
            }
            Unit::Instance { account, id } => {
                let i = self.state.instance(account, id)?;
                let storage = i.storage.clone()?;
                Some(UnitView {
                    spec: UnitSpec {
                        resource_id: i.resource_id.clone(),
                        engine: Engine::parse(&i.engine).ok()?,
                        port: storage.port,
                        master_username: i.master_username.clone(),
                        initial_database: i.db_name.clone(),
                        encrypted: storage.encrypted,
                    },
                    arn: i.arn(),
                    status: i.status,
                    storage,
                })
            }
        }
    }

    /// Every unit (for the watcher and for recovery after a restart).
    pub(crate) fn all_units(&self) -> Vec<Unit> {
        let clusters = self
            .state
            .all_clusters()
            .into_iter()
            .map(|c| Unit::Cluster {
                account: c.account,
                id: c.id,
            });
        let instances = self
            .state
            .all_instances()
            .into_iter()
            .filter(|i| i.storage.is_some())
            .map(|i| Unit::Instance {
                account: i.account,
                id: i.id,
            });
        clusters.chain(instances).collect()
    }

    /// Sets the status of a unit: the cluster and every member, or the instance.
    pub(crate) fn set_status(&self, unit: &Unit, new_status: &str) -> RdsResult<()> {
        self.update_storage_and_status(unit, new_status, |_| {})
    }

    pub(crate) fn update_storage_and_status(
        &self,
        unit: &Unit,
        new_status: &str,
        change: impl FnOnce(&mut StorageRecord),
    ) -> RdsResult<()> {
        match unit {
            Unit::Cluster { account, id } => {
                self.state.update_cluster(account, id, |c| {
                    c.status = new_status.to_owned();
                    change(&mut c.storage);
                    Ok(())
                })?;
                for member in self.state.members_of(account, id) {
                    self.state.update_instance(account, &member.id, |i| {
                        i.status = new_status.to_owned();
                        Ok(())
                    })?;
                }
            }
            Unit::Instance { account, id } => {
                self.state.update_instance(account, id, |i| {
                    i.status = new_status.to_owned();
                    if let Some(storage) = &mut i.storage {
                        change(storage);
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Changes the master password of an available unit on its running engine (the
    /// `MasterUserPassword` of ModifyDBInstance / ModifyDBCluster). Open sessions stay.
    pub(crate) async fn reset_master_password(
        &self,
        unit: &Unit,
        password: kura_crypto::SecretBytes,
    ) -> RdsResult<()> {
        let view = self
            .view(unit)
            .ok_or_else(|| RdsError::Internal(format!("unit {} vanished", unit.id())))?;
        let running = self.runtime.is_running(&view.spec.resource_id).await;
        if view.status != status::AVAILABLE || !running {
            let message = match unit {
                Unit::Cluster { id, .. } if view.status == status::AVAILABLE => format!(
                    "DB cluster {id} has no running instance: add one (CreateDBInstance with --db-cluster-identifier) before changing the master password."
                ),
                Unit::Cluster { id, .. } => format!("DB cluster {id} is not in available state."),
                Unit::Instance { id, .. } => format!("Instance {id} is not in available state."),
            };
            return Err(match unit {
                Unit::Cluster { .. } => RdsError::InvalidClusterState(message),
                Unit::Instance { .. } => RdsError::InvalidInstanceState(message),
            });
        }
        self.runtime
            .set_master_password(&view.spec, password)
            .await?;
        self.event(
            unit,
            &view.arn,
            "Reset master credentials",
            "configuration change",
        );
        Ok(())
    }

    pub(crate) fn event(&self, unit: &Unit, arn: &str, message: &str, category: &str) {
        let event = EventRecord {
            account: unit.account().to_owned(),
            source_identifier: unit.id().to_owned(),
            source_type: unit.source_type().to_owned(),
            source_arn: arn.to_owned(),
            message: message.to_owned(),
            categories: vec![category.to_owned()],
            date: self.clock.now(),
        };
        if let Err(error) = self.state.add_event(event) {
            tracing::warn!(%error, "could not record an RDS event");
        }
    }

    /// Opens storage (asking the KMS for the volume key) and starts the engine;
    /// `starting` → `available`. If the key is not usable, the unit is (or stays) locked
    /// and the error says why.
    pub(crate) async fn bring_up(&self, unit: &Unit) -> RdsResult<()> {
        let view = self
            .view(unit)
            .ok_or_else(|| RdsError::Internal(format!("unit {} vanished", unit.id())))?;
        self.set_status(unit, status::STARTING)?;
        let key = if view.spec.encrypted {
            match self.keys.unwrap(unit.account(), &view.storage).await {
                Ok(key) => Some(key),
                Err(error) => {
                    self.mark_locked(unit, &view.arn, &error.to_string())?;
                    return Err(RdsError::KmsKeyNotAccessible(format!(
                        "The KMS key [{}] of this database does not exist, is not enabled or you do not have permissions to access it. ({}: {})",
                        view.storage.kms_key_arn.unwrap_or_default(),
                        error.code,
                        error.message
                    )));
                }
            }
        } else {
            None
        };
        if let Err(error) = self.runtime.start(&view.spec, key).await {
            self.set_status(unit, status::FAILED)?;
            self.event(
                unit,
                &view.arn,
                &format!("The database could not be started: {error}"),
                "failure",
            );
            return Err(error);
        }
        self.update_storage_and_status(unit, status::AVAILABLE, |s| s.locked_since = None)?;
        self.event(unit, &view.arn, "DB instance started", "availability");
        Ok(())
    }

    /// The key stopped working: cut the engine off its storage at once.
    pub(crate) async fn lock(&self, unit: &Unit, reason: &str) -> RdsResult<()> {
        let view = self
            .view(unit)
            .ok_or_else(|| RdsError::Internal(format!("unit {} vanished", unit.id())))?;
        self.runtime.lock(&view.spec.resource_id).await?;
        self.mark_locked(unit, &view.arn, reason)
    }

    fn mark_locked(&self, unit: &Unit, arn: &str, reason: &str) -> RdsResult<()> {
        let now = self.clock.now();
        self.update_storage_and_status(unit, status::INACCESSIBLE_RECOVERABLE, |s| {
            s.locked_since = Some(s.locked_since.unwrap_or(now));
        })?;
        self.event(
            unit,
            arn,
            &format!("The database lost access to its KMS key and was stopped; it recovers when the key is usable again. ({reason})"),
            "failure",
        );
        Ok(())
    }

    /// Moves a unit locked for longer than the recoverable period to the terminal state.
    pub(crate) async fn expire_if_overdue(&self, unit: &Unit, now: Timestamp) -> RdsResult<()> {
        let Some(view) = self.view(unit) else {
            return Ok(());
        };
        let period =
            i64::try_from(self.settings.recoverable_period.as_millis()).unwrap_or(i64::MAX);
        let overdue = view.status == status::INACCESSIBLE_RECOVERABLE
            && view
                .storage
                .locked_since
                .is_some_and(|since| since.plus_millis(period) <= now);
        if overdue {
            self.runtime.stop(&view.spec.resource_id).await?;
            self.set_status(unit, status::INACCESSIBLE)?;
            self.event(
                unit,
                &view.arn,
                "The database could not reach its KMS key within the recoverable period and can only be restored from a snapshot.",
                "failure",
            );
        }
        Ok(())
    }
}
