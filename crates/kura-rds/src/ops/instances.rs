//! DB instances: CreateDBInstance, DescribeDBInstances, ModifyDBInstance,
//! DeleteDBInstance, RebootDBInstance, StopDBInstance, StartDBInstance.

use std::sync::Arc;

use kura_crypto::SecretBytes;
use kura_edge::AuditDetails;
use kura_edge::xml::XmlWriter;

use super::clusters::spawn_provision;
use super::{Call, add_resource, identifier_from, matches_filters, render_page};
use crate::Rds;
use crate::error::{RdsError, RdsResult};
use crate::lifecycle::Unit;
use crate::model::{
    ClusterRecord, Engine, InstanceRecord, StorageRecord, check_identifier, new_resource_id, status,
};
use crate::params::Params;
use crate::render::{self, EndpointHost};
use crate::runtime::UnitSpec;

const INSTANCE_RESOURCE: &str = "AWS::RDS::DBInstance";

/// A master user name and password, checked against RDS's rules.
pub(crate) struct MasterCredentials {
    pub username: String,
    pub password: SecretBytes,
}

pub(crate) fn master_credentials(p: &Params<'_>, engine: Engine) -> RdsResult<MasterCredentials> {
    let username = p.required("MasterUsername")?;
    let max_name = match engine.family() {
        kura_engine::EngineFamily::Postgres => 63,
        kura_engine::EngineFamily::MariaDb => 16,
    };
    let name_ok = username.len() <= max_name
        && username.starts_with(|c: char| c.is_ascii_alphabetic())
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return Err(RdsError::InvalidParameterValue(format!(
            "The parameter MasterUsername is not a valid identifier: 1 to {max_name} letters, digits or underscores, beginning with a letter."
        )));
    }
    Ok(MasterCredentials {
        username: username.to_owned(),
        password: master_password(p.required("MasterUserPassword")?)?,
    })
}

/// A `MasterUserPassword` value, checked as RDS checks it.
pub(crate) fn master_password(password: &str) -> RdsResult<SecretBytes> {
    let password_ok = (8..=128).contains(&password.len())
        && password
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '\'' | '"' | '@'));
    if !password_ok {
        return Err(RdsError::InvalidParameterValue(
            "The parameter MasterUserPassword is not a valid password. Only printable ASCII characters besides '/', '@', '\"', ' ' may be used, and it must be 8 to 128 characters long.".into(),
        ));
    }
    Ok(SecretBytes::copy_from(password.as_bytes()))
}

/// The initial database name parameter (`DBName` / `DatabaseName`).
pub(crate) fn database_name(
    p: &Params<'_>,
    parameter: &str,
    engine: Engine,
) -> RdsResult<Option<String>> {
    let Some(name) = p.string(parameter).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let max = match engine.family() {
        kura_engine::EngineFamily::Postgres => 63,
        kura_engine::EngineFamily::MariaDb => 64,
    };
    let valid = name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(Some(name.to_owned()))
    } else {
        Err(RdsError::InvalidParameterValue(format!(
            "The parameter {parameter} must begin with a letter and contain only letters, digits and underscores, at most {max} characters."
        )))
    }
}

/// `SkipFinalSnapshot` / `FinalDBSnapshotIdentifier` of a deletion: the final snapshot's
/// identifier, if one is to be taken.
pub(crate) fn final_snapshot_id(p: &Params<'_>) -> RdsResult<Option<String>> {
    let skip = p.bool("SkipFinalSnapshot")?.unwrap_or(false);
    match (skip, p.string("FinalDBSnapshotIdentifier")) {
        (true, None) => Ok(None),
        (true, Some(_)) => Err(RdsError::InvalidParameterCombination(
            "FinalDBSnapshotIdentifier can not be specified when deleting a cluster with SkipFinalSnapshot set to true.".into(),
        )),
        (false, None) => Err(RdsError::InvalidParameterCombination(
            "FinalDBSnapshotIdentifier is required unless SkipFinalSnapshot is specified.".into(),
        )),
        (false, Some(id)) => check_identifier("FinalDBSnapshotIdentifier", id).map(Some),
    }
}

impl Call<'_> {
    pub async fn create_db_instance(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = check_identifier("DBInstanceIdentifier", p.required("DBInstanceIdentifier")?)?;
        let class = p.required("DBInstanceClass")?.to_owned();
        let engine = Engine::parse(p.required("Engine")?)?;
        let arn = self.arn("db", &id);
        add_resource(audit, self.account(), INSTANCE_RESOURCE, &arn);
        self.authorize("rds:CreateDBInstance", &arn)?;
        if self.rds.state.instance(self.account(), &id).is_some() {
            return Err(RdsError::InstanceAlreadyExists(id));
        }
        match p.string("DBClusterIdentifier") {
            Some(cluster) => {
                self.create_member(p, id, class, engine, &identifier_from(cluster, "cluster"))
            }
            None => self.create_standalone(p, id, class, engine).await,
        }
    }

    fn create_member(
        &self,
        p: &Params<'_>,
        id: String,
        class: String,
        engine: Engine,
        cluster_id: &str,
    ) -> RdsResult<String> {
        let cluster = self
            .rds
            .state
            .cluster(self.account(), cluster_id)
            .ok_or_else(|| RdsError::ClusterNotFound(cluster_id.to_owned()))?;
        if cluster.engine != engine.name() {
            return Err(RdsError::InvalidParameterCombination(format!(
                "The engine name requested for your DB instance ({}) doesn't match the engine name of your DB cluster ({}).",
                engine.name(),
                cluster.engine
            )));
        }
        if p.string("StorageEncrypted").is_some() || p.string("KmsKeyId").is_some() {
            return Err(RdsError::InvalidParameterCombination(
                "The requested DB Instance will be a member of a DB Cluster and its storage encryption key should not be set directly.".into(),
            ));
        }
        if p.string("MasterUserPassword").is_some() {
            return Err(RdsError::InvalidParameterCombination(
                "The requested DB Instance will be a member of a DB Cluster. Set master user password for the DB Cluster.".into(),
            ));
        }
        let joinable = [status::AVAILABLE, status::CREATING, status::STARTING];
        if !joinable.contains(&cluster.status.as_str()) {
            return Err(RdsError::InvalidClusterState(format!(
                "DbCluster {} is in {} state; an instance can be added when it is available.",
                cluster.id, cluster.status
            )));
        }
        let record = InstanceRecord {
            account: self.account().to_owned(),
            region: self.rds.region.to_string(),
            id,
            resource_id: new_resource_id("db-")?,
            cluster: Some(cluster.id.clone()),
            instance_class: class,
            engine: cluster.engine.clone(),
            engine_version: cluster.engine_version.clone(),
            master_username: cluster.master_username.clone(),
            db_name: cluster.database_name.clone(),
            status: status::CREATING.to_owned(),
            storage: None,
            allocated_storage: 1,
            created: self.ctx.time,
            backup_retention: cluster.backup_retention,
            backup_window: cluster.backup_window.clone(),
            deletion_protection: p.bool("DeletionProtection")?.unwrap_or(false),
            copy_tags_to_snapshot: p
                .bool("CopyTagsToSnapshot")?
                .unwrap_or(cluster.copy_tags_to_snapshot),
            tags: p.tags("Tags"),
        };
        self.rds.state.insert_instance(record.clone())?;
        let rds = self.rds.clone();
        let unit = Unit::Cluster {
            account: cluster.account.clone(),
            id: cluster.id.clone(),
        };
        tokio::spawn(async move { rds.join_cluster(unit).await });
        Ok(self.rds.instance_xml(&record))
    }

    async fn create_standalone(
        &self,
        p: &Params<'_>,
        id: String,
        class: String,
        engine: Engine,
    ) -> RdsResult<String> {
        if engine.is_aurora() {
            return Err(RdsError::InvalidParameterValue(format!(
                "DBClusterIdentifier is required for DB engine {}: create the cluster first, then its instances.",
                engine.name()
            )));
        }
        let master = master_credentials(p, engine)?;
        let db_name = database_name(p, "DBName", engine)?;
        let kms_key_id = p.string("KmsKeyId").filter(|k| !k.is_empty());
        let encrypted = p.bool("StorageEncrypted")?.unwrap_or(false);
        if kms_key_id.is_some() && !encrypted {
            return Err(RdsError::InvalidParameterCombination(format!(
                "You must enable StorageEncrypted when you specify KmsKeyId for DB engine {}",
                engine.name()
            )));
        }
        let allocated = p.int("AllocatedStorage")?.unwrap_or(20);
        if !(20..=65536).contains(&allocated) {
            return Err(RdsError::InvalidParameterValue(format!(
                "Invalid storage size for engine name {} and storage type gp3: {allocated}",
                engine.name()
            )));
        }
        let (backup_retention, backup_window) = crate::backups::requested_settings(p, false)?;
        let port = self.rds.choose_port(p.int("Port")?)?;
        let resource_id = new_resource_id("db-")?;
        let (storage, key) = self
            .storage_for(encrypted, kms_key_id, &resource_id, port)
            .await?;
        let record = InstanceRecord {
            account: self.account().to_owned(),
            region: self.rds.region.to_string(),
            id: id.clone(),
            resource_id: resource_id.clone(),
            cluster: None,
            instance_class: class,
            engine: engine.name().to_owned(),
            engine_version: p
                .string("EngineVersion")
                .unwrap_or(engine.default_version())
                .to_owned(),
            master_username: master.username.clone(),
            db_name: db_name.clone(),
            status: status::CREATING.to_owned(),
            storage: Some(storage.clone()),
            allocated_storage: allocated,
            created: self.ctx.time,
            backup_retention,
            backup_window,
            deletion_protection: p.bool("DeletionProtection")?.unwrap_or(false),
            copy_tags_to_snapshot: p.bool("CopyTagsToSnapshot")?.unwrap_or(false),
            tags: p.tags("Tags"),
        };
        self.rds.state.insert_instance(record.clone())?;
        let spec = UnitSpec {
            resource_id,
            engine,
            port,
            master_username: master.username,
            initial_database: db_name,
            encrypted,
        };
        let unit = Unit::Instance {
            account: self.account().to_owned(),
            id,
        };
        spawn_provision(self.rds.clone(), unit, spec, master.password, key, true);
        Ok(self.rds.instance_xml(&record))
    }

    pub fn describe_db_instances(&self, p: &Params<'_>) -> RdsResult<String> {
        self.authorize("rds:DescribeDBInstances", &self.arn("db", "*"))?;
        let wanted = p
            .string("DBInstanceIdentifier")
            .map(|v| identifier_from(v, "db"));
        let filters = p.filters();
        let mut instances = Vec::new();
        for instance in self.rds.state.instances_of(self.account()) {
            let matches = matches_filters(&filters, |name| match name {
                "db-instance-id" => Some(instance.id.clone()),
                "db-cluster-id" => Some(instance.cluster.clone().unwrap_or_default()),
                "dbi-resource-id" => Some(instance.resource_id.clone()),
                "engine" => Some(instance.engine.clone()),
                _ => None,
            })?;
            if matches && wanted.as_ref().is_none_or(|w| *w == instance.id) {
                instances.push(instance);
            }
        }
        if let (Some(id), true) = (&wanted, instances.is_empty()) {
            return Err(RdsError::InstanceNotFound(id.clone()));
        }
        render_page(
            p,
            instances,
            |i| i.id.clone(),
            "DBInstances",
            |w, instance| self.rds.render_instance(w, instance),
        )
    }

    pub async fn modify_db_instance(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = identifier_from(p.required("DBInstanceIdentifier")?, "db");
        let instance = self.existing_instance(&id, audit)?;
        self.authorize("rds:ModifyDBInstance", &instance.arn())?;
        if p.string("NewDBInstanceIdentifier").is_some() {
            return Err(RdsError::Unsupported(
                "kura cannot rename instances yet; create one from a snapshot under the new name."
                    .into(),
            ));
        }
        // The password first: if the engine refuses it, nothing else has changed.
        if let Some(password) = p.string("MasterUserPassword") {
            let password = master_password(password)?;
            if instance.cluster.is_some() {
                return Err(RdsError::InvalidParameterCombination(
                    "The specified DB instance is a member of a DB cluster. Modify the master user password for the DB cluster with ModifyDBCluster.".into(),
                ));
            }
            self.rds
                .reset_master_password(&self.rds.unit_of(&instance), password)
                .await?;
        }
        let class = p.string("DBInstanceClass").map(str::to_owned);
        let allocated = p.int("AllocatedStorage")?;
        let backup_retention = crate::backups::requested_retention(p, false)?;
        let backup_window = crate::window::requested(p)?;
        let deletion_protection = p.bool("DeletionProtection")?;
        let copy_tags = p.bool("CopyTagsToSnapshot")?;
        let updated = self.rds.state.update_instance(self.account(), &id, |i| {
            if let Some(window) = &backup_window {
                i.backup_window.clone_from(window);
            }
            if let Some(class) = class {
                i.instance_class = class;
            }
            if let Some(size) = allocated {
                i.allocated_storage = size;
            }
            if let Some(days) = backup_retention {
                i.backup_retention = days;
            }
            if let Some(protect) = deletion_protection {
                i.deletion_protection = protect;
            }
            if let Some(copy) = copy_tags {
                i.copy_tags_to_snapshot = copy;
            }
            Ok(())
        })?;
        Ok(self.rds.instance_xml(&updated))
    }

    pub async fn delete_db_instance(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = identifier_from(p.required("DBInstanceIdentifier")?, "db");
        let instance = self.existing_instance(&id, audit)?;
        self.authorize("rds:DeleteDBInstance", &instance.arn())?;
        if instance.deletion_protection {
            return Err(RdsError::InvalidParameterCombination(
                "Cannot delete protected DB Instance, please disable deletion protection and try again.".into(),
            ));
        }
        if instance.status == status::DELETING {
            return Err(RdsError::InvalidInstanceState(format!(
                "Instance {id} is already being deleted."
            )));
        }
        let storage = self.rds.storage_of(&instance);
        let deleting = InstanceRecord {
            status: status::DELETING.to_owned(),
            ..instance.clone()
        };
        match &instance.cluster {
            Some(cluster) => {
                self.rds.state.update_instance(self.account(), &id, |i| {
                    i.status = status::DELETING.to_owned();
                    Ok(())
                })?;
                let rds = self.rds.clone();
                let (account, cluster) = (self.account().to_owned(), cluster.clone());
                tokio::spawn(async move { rds.leave_cluster(account, cluster, id).await });
            }
            None => {
                let final_snapshot = self.final_snapshot(
                    crate::model::SnapshotKind::Instance,
                    final_snapshot_id(p)?,
                    instance.clone().into(),
                )?;
                self.rds.state.update_instance(self.account(), &id, |i| {
                    i.status = status::DELETING.to_owned();
                    Ok(())
                })?;
                let rds = self.rds.clone();
                let unit = Unit::Instance {
                    account: self.account().to_owned(),
                    id,
                };
                let (resource_id, own_storage) = (instance.resource_id.clone(), storage.clone());
                tokio::spawn(async move {
                    rds.clone().capture_final(final_snapshot).await;
                    rds.destroy(unit, resource_id, own_storage).await
                });
            }
        }
        Ok(self.rds.instance_xml(&deleting))
    }

    pub async fn reboot_db_instance(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = identifier_from(p.required("DBInstanceIdentifier")?, "db");
        let instance = self.existing_instance(&id, audit)?;
        self.authorize("rds:RebootDBInstance", &instance.arn())?;
        if instance.status != status::AVAILABLE {
            return Err(RdsError::InvalidInstanceState(format!(
                "Instance {id} is not in available state."
            )));
        }
        let unit = self.rds.unit_of(&instance);
        let resource_id = self
            .rds
            .view(&unit)
            .map(|v| v.spec.resource_id)
            .unwrap_or_default();
        self.rds.set_status(&unit, status::REBOOTING)?;
        let rds = self.rds.clone();
        tokio::spawn(async move {
            if let Err(error) = rds.runtime.stop(&resource_id).await {
                tracing::warn!(%error, "reboot: stop failed");
            }
            if let Err(error) = rds.bring_up(&unit).await {
                tracing::warn!(%error, "reboot: start failed");
            }
        });
        Ok(self.rds.instance_xml(&InstanceRecord {
            status: status::REBOOTING.to_owned(),
            ..instance
        }))
    }

    pub async fn stop_db_instance(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = identifier_from(p.required("DBInstanceIdentifier")?, "db");
        let instance = self.existing_instance(&id, audit)?;
        self.authorize("rds:StopDBInstance", &instance.arn())?;
        if instance.cluster.is_some() {
            return Err(RdsError::InvalidParameterCombination(
                "Instances of an Aurora cluster cannot be stopped on their own; stop the cluster with StopDBCluster.".into(),
            ));
        }
        if instance.status != status::AVAILABLE {
            return Err(RdsError::InvalidInstanceState(format!(
                "Instance {id} is not in available state."
            )));
        }
        let unit = self.rds.unit_of(&instance);
        self.rds.set_status(&unit, status::STOPPING)?;
        let rds = self.rds.clone();
        let resource_id = instance.resource_id.clone();
        tokio::spawn(async move { rds.stop_unit(unit, resource_id).await });
        Ok(self.rds.instance_xml(&InstanceRecord {
            status: status::STOPPING.to_owned(),
            ..instance
        }))
    }

    pub async fn start_db_instance(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = identifier_from(p.required("DBInstanceIdentifier")?, "db");
        let instance = self.existing_instance(&id, audit)?;
        self.authorize("rds:StartDBInstance", &instance.arn())?;
        if instance.cluster.is_some() {
            return Err(RdsError::InvalidParameterCombination(
                "Instances of an Aurora cluster start with their cluster: use StartDBCluster."
                    .into(),
            ));
        }
        if ![status::STOPPED, status::INACCESSIBLE_RECOVERABLE].contains(&instance.status.as_str())
        {
            return Err(RdsError::InvalidInstanceState(format!(
                "Instance {id} is not stopped, it cannot be started."
            )));
        }
        let storage = self.rds.storage_of(&instance);
        self.rds
            .start_unit_checked(&self.rds.unit_of(&instance), &storage)
            .await?;
        Ok(self.rds.instance_xml(&InstanceRecord {
            status: status::STARTING.to_owned(),
            ..instance
        }))
    }

    fn existing_instance(&self, id: &str, audit: &mut AuditDetails) -> RdsResult<InstanceRecord> {
        let instance = self
            .rds
            .state
            .instance(self.account(), id)
            .ok_or_else(|| RdsError::InstanceNotFound(id.to_owned()))?;
        add_resource(audit, self.account(), INSTANCE_RESOURCE, &instance.arn());
        Ok(instance)
    }
}

impl Rds {
    pub(crate) fn instance_xml(&self, instance: &InstanceRecord) -> String {
        let mut w = XmlWriter::new();
        self.render_instance(&mut w, instance);
        w.finish()
    }

    /// Renders an instance; an Aurora member shows its cluster's storage and backup
    /// settings, which belong to the cluster.
    pub(crate) fn render_instance(&self, w: &mut XmlWriter, instance: &InstanceRecord) {
        let cluster = instance
            .cluster
            .as_ref()
            .and_then(|id| self.state.cluster(&instance.account, id));
        let storage = self.storage_of(instance);
        let inherited = match &cluster {
            Some(c) => render::Inherited {
                storage: &storage,
                backup_retention: c.backup_retention,
                backup_window: &c.backup_window,
            },
            None => render::Inherited {
                storage: &storage,
                backup_retention: instance.backup_retention,
                backup_window: &instance.backup_window,
            },
        };
        render::instance(
            w,
            instance,
            &inherited,
            &EndpointHost(&self.settings.endpoint_host),
        );
    }

    /// An instance's storage: its own, or its cluster's.
    pub(crate) fn storage_of(&self, instance: &InstanceRecord) -> StorageRecord {
        match (&instance.storage, &instance.cluster) {
            (Some(storage), _) => storage.clone(),
            (None, Some(cluster)) => self
                .state
                .cluster(&instance.account, cluster)
                .map(|c: ClusterRecord| c.storage)
                .unwrap_or_default(),
            (None, None) => StorageRecord::default(),
        }
    }

    /// The unit whose engine serves an instance.
    pub(crate) fn unit_of(&self, instance: &InstanceRecord) -> Unit {
        match &instance.cluster {
            Some(cluster) => Unit::Cluster {
                account: instance.account.clone(),
                id: cluster.clone(),
            },
            None => Unit::Instance {
                account: instance.account.clone(),
                id: instance.id.clone(),
            },
        }
    }

    /// A new instance joined a cluster: wait for the cluster's storage, then make sure its
    /// engine runs.
    async fn join_cluster(self: Arc<Self>, unit: Unit) {
        for _ in 0..1200 {
            match self.view(&unit) {
                Some(view) if view.storage.provisioned => break,
                Some(view) if view.status == status::FAILED => break,
                None => return,
                _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
        let Some(view) = self.view(&unit) else {
            return;
        };
        let outcome = if view.status == status::FAILED {
            self.set_status(&unit, status::FAILED)
        } else if self.runtime.is_running(&view.spec.resource_id).await {
            self.set_status(&unit, status::AVAILABLE)
        } else {
            self.bring_up(&unit).await
        };
        if let Err(error) = outcome {
            tracing::warn!(cluster = unit.id(), %error, "the new instance could not be brought up");
        }
    }

    /// An instance left its cluster; the last one out stops the cluster's engine.
    async fn leave_cluster(self: Arc<Self>, account: String, cluster: String, instance: String) {
        if let Err(error) = self.state.remove_instance(&account, &instance) {
            tracing::error!(%error, "could not remove an instance record");
            return;
        }
        if !self.state.members_of(&account, &cluster).is_empty() {
            return;
        }
        if let Some(record) = self.state.cluster(&account, &cluster)
            && let Err(error) = self.runtime.stop(&record.resource_id).await
        {
            tracing::warn!(%error, "could not stop the cluster engine");
        }
    }
}
