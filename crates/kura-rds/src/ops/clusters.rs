//! DB clusters: CreateDBCluster, DescribeDBClusters, ModifyDBCluster, DeleteDBCluster,
//! StopDBCluster, StartDBCluster.

use std::sync::Arc;

use kura_crypto::SecretBytes;
use kura_edge::AuditDetails;
use kura_edge::xml::XmlWriter;

use super::{Call, add_resource, identifier_from, matches_filters, render_page};
use crate::Rds;
use crate::error::{RdsError, RdsResult};
use crate::lifecycle::Unit;
use crate::model::{
    ClusterRecord, Engine, StorageRecord, check_identifier, new_resource_id, status,
};
use crate::params::Params;
use crate::render::{self, EndpointHost};
use crate::runtime::UnitSpec;

use crate::keys::KeyRole;

const CLUSTER_RESOURCE: &str = "AWS::RDS::DBCluster";

impl Call<'_> {
    pub async fn create_db_cluster(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = check_identifier("DBClusterIdentifier", p.required("DBClusterIdentifier")?)?;
        let engine = Engine::parse(p.required("Engine")?)?;
        let master = super::instances::master_credentials(p, engine)?;
        let arn = self.arn("cluster", &id);
        add_resource(audit, self.account(), CLUSTER_RESOURCE, &arn);
        self.authorize("rds:CreateDBCluster", &arn)?;
        let database_name = super::instances::database_name(p, "DatabaseName", engine)?;
        let kms_key_id = p.string("KmsKeyId").filter(|k| !k.is_empty());
        let encrypted = p.bool("StorageEncrypted")?.unwrap_or(false)
            || (engine.is_aurora() && kms_key_id.is_some());
        if kms_key_id.is_some() && !encrypted {
            return Err(RdsError::InvalidParameterCombination(format!(
                "You must enable StorageEncrypted when you specify KmsKeyId for DB engine {}",
                engine.name()
            )));
        }
        if self.rds.state.cluster(self.account(), &id).is_some() {
            return Err(RdsError::ClusterAlreadyExists(id));
        }
        let (backup_retention, backup_window) = crate::backups::requested_settings(p, true)?;
        let port = self.rds.choose_port(p.int("Port")?)?;
        let resource_id = new_resource_id("cluster-")?;
        let (storage, key) = self
            .storage_for(encrypted, kms_key_id, &resource_id, port)
            .await?;
        let record = ClusterRecord {
            account: self.account().to_owned(),
            region: self.rds.region.to_string(),
            id: id.clone(),
            resource_id: resource_id.clone(),
            engine: engine.name().to_owned(),
            engine_version: p
                .string("EngineVersion")
                .unwrap_or(engine.default_version())
                .to_owned(),
            master_username: master.username.clone(),
            database_name: database_name.clone(),
            status: status::CREATING.to_owned(),
            storage,
            created: self.ctx.time,
            backup_retention,
            backup_window,
            deletion_protection: p.bool("DeletionProtection")?.unwrap_or(false),
            copy_tags_to_snapshot: p.bool("CopyTagsToSnapshot")?.unwrap_or(false),
            tags: p.tags("Tags"),
        };
        self.rds.state.insert_cluster(record.clone())?;
        let spec = UnitSpec {
            resource_id,
            engine,
            port,
            master_username: master.username,
            initial_database: database_name,
            encrypted,
        };
        let unit = Unit::Cluster {
            account: self.account().to_owned(),
            id,
        };
        spawn_provision(self.rds.clone(), unit, spec, master.password, key, false);
        Ok(self.rds.cluster_xml(&record))
    }

    /// The storage record (and, if encrypted, the volume key) of a new database.
    pub(crate) async fn storage_for(
        &self,
        encrypted: bool,
        kms_key_id: Option<&str>,
        resource_id: &str,
        port: u16,
    ) -> RdsResult<(StorageRecord, Option<SecretBytes>)> {
        if !encrypted {
            return Ok((
                StorageRecord {
                    port,
                    ..StorageRecord::default()
                },
                None,
            ));
        }
        let new_key = self
            .rds
            .keys
            .new_storage_key(self.ctx, kms_key_id, resource_id, KeyRole::Specified)
            .await?;
        Ok((
            StorageRecord {
                port,
                ..new_key.storage
            },
            Some(new_key.key),
        ))
    }

    pub fn describe_db_clusters(&self, p: &Params<'_>) -> RdsResult<String> {
        self.authorize("rds:DescribeDBClusters", &self.arn("cluster", "*"))?;
        let wanted = p
            .string("DBClusterIdentifier")
            .map(|v| identifier_from(v, "cluster"));
        let filters = p.filters();
        let mut clusters = Vec::new();
        for cluster in self.rds.state.clusters_of(self.account()) {
            let matches = matches_filters(&filters, |name| match name {
                "db-cluster-id" => Some(cluster.id.clone()),
                "db-cluster-resource-id" => Some(cluster.resource_id.clone()),
                "engine" => Some(cluster.engine.clone()),
                _ => None,
            })?;
            if matches && wanted.as_ref().is_none_or(|w| *w == cluster.id) {
                clusters.push(cluster);
            }
        }
        if let (Some(id), true) = (&wanted, clusters.is_empty()) {
            return Err(RdsError::ClusterNotFound(id.clone()));
        }
        render_page(
            p,
            clusters,
            |c| c.id.clone(),
            "DBClusters",
            |w, cluster| self.rds.render_cluster(w, cluster),
        )
    }

    pub async fn modify_db_cluster(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = identifier_from(p.required("DBClusterIdentifier")?, "cluster");
        let cluster = self.existing_cluster(&id, audit)?;
        self.authorize("rds:ModifyDBCluster", &cluster.arn())?;
        if p.string("NewDBClusterIdentifier").is_some() {
            return Err(RdsError::Unsupported(
                "kura cannot rename clusters yet; restore a snapshot under the new name.".into(),
            ));
        }
        // The password first: if the engine refuses it, nothing else has changed.
        if let Some(password) = p.string("MasterUserPassword") {
            let password = crate::ops::instances::master_password(password)?;
            let unit = Unit::Cluster {
                account: self.account().to_owned(),
                id: id.clone(),
            };
            self.rds.reset_master_password(&unit, password).await?;
        }
        let backup_retention = crate::backups::requested_retention(p, true)?;
        let backup_window = crate::window::requested(p)?;
        let deletion_protection = p.bool("DeletionProtection")?;
        let copy_tags = p.bool("CopyTagsToSnapshot")?;
        let updated = self.rds.state.update_cluster(self.account(), &id, |c| {
            if let Some(days) = backup_retention {
                c.backup_retention = days;
            }
            if let Some(window) = &backup_window {
                c.backup_window.clone_from(window);
            }
            if let Some(protect) = deletion_protection {
                c.deletion_protection = protect;
            }
            if let Some(copy) = copy_tags {
                c.copy_tags_to_snapshot = copy;
            }
            Ok(())
        })?;
        Ok(self.rds.cluster_xml(&updated))
    }

    pub async fn delete_db_cluster(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = identifier_from(p.required("DBClusterIdentifier")?, "cluster");
        let cluster = self.existing_cluster(&id, audit)?;
        self.authorize("rds:DeleteDBCluster", &cluster.arn())?;
        if cluster.deletion_protection {
            return Err(RdsError::InvalidParameterCombination(
                "Cannot delete protected Cluster, please disable deletion protection and try again.".into(),
            ));
        }
        if !self.rds.state.members_of(self.account(), &id).is_empty() {
            return Err(RdsError::InvalidClusterState(
                "Cluster cannot be deleted, it still contains DB instances in non-deleting state."
                    .into(),
            ));
        }
        let final_snapshot = self.final_snapshot(
            crate::model::SnapshotKind::Cluster,
            super::instances::final_snapshot_id(p)?,
            cluster.clone().into(),
        )?;
        let deleting = self.rds.state.update_cluster(self.account(), &id, |c| {
            c.status = status::DELETING.to_owned();
            Ok(())
        })?;
        let rds = self.rds.clone();
        let unit = Unit::Cluster {
            account: self.account().to_owned(),
            id,
        };
        tokio::spawn(async move {
            rds.clone().capture_final(final_snapshot).await;
            rds.destroy(unit, deleting.resource_id.clone(), deleting.storage.clone())
                .await
        });
        Ok(self
            .rds
            .cluster_xml(&cluster_with_status(&cluster, status::DELETING)))
    }

    pub async fn stop_db_cluster(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = identifier_from(p.required("DBClusterIdentifier")?, "cluster");
        let cluster = self.existing_cluster(&id, audit)?;
        self.authorize("rds:StopDBCluster", &cluster.arn())?;
        if cluster.status != status::AVAILABLE {
            return Err(RdsError::InvalidClusterState(format!(
                "DbCluster {id} is in {} state but expected it to be one of available.",
                cluster.status
            )));
        }
        let unit = Unit::Cluster {
            account: self.account().to_owned(),
            id,
        };
        self.rds.set_status(&unit, status::STOPPING)?;
        let rds = self.rds.clone();
        let resource_id = cluster.resource_id.clone();
        tokio::spawn(async move { rds.stop_unit(unit, resource_id).await });
        Ok(self
            .rds
            .cluster_xml(&cluster_with_status(&cluster, status::STOPPING)))
    }

    pub async fn start_db_cluster(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = identifier_from(p.required("DBClusterIdentifier")?, "cluster");
        let cluster = self.existing_cluster(&id, audit)?;
        self.authorize("rds:StartDBCluster", &cluster.arn())?;
        let startable = [status::STOPPED, status::INACCESSIBLE_RECOVERABLE];
        if !startable.contains(&cluster.status.as_str()) {
            return Err(RdsError::InvalidClusterState(format!(
                "DbCluster {id} is in {} state but expected it to be one of stopped,inaccessible-encryption-credentials-recoverable.",
                cluster.status
            )));
        }
        let unit = Unit::Cluster {
            account: self.account().to_owned(),
            id,
        };
        self.rds.start_unit_checked(&unit, &cluster.storage).await?;
        Ok(self
            .rds
            .cluster_xml(&cluster_with_status(&cluster, status::STARTING)))
    }

    fn existing_cluster(&self, id: &str, audit: &mut AuditDetails) -> RdsResult<ClusterRecord> {
        let cluster = self
            .rds
            .state
            .cluster(self.account(), id)
            .ok_or_else(|| RdsError::ClusterNotFound(id.to_owned()))?;
        add_resource(audit, self.account(), CLUSTER_RESOURCE, &cluster.arn());
        Ok(cluster)
    }
}

fn cluster_with_status(cluster: &ClusterRecord, new_status: &str) -> ClusterRecord {
    ClusterRecord {
        status: new_status.to_owned(),
        ..cluster.clone()
    }
}

/// Provisions a new unit in the background; its status says how it went.
pub(crate) fn spawn_provision(
    rds: Arc<Rds>,
    unit: Unit,
    spec: UnitSpec,
    password: SecretBytes,
    key: Option<SecretBytes>,
    start: bool,
) {
    tokio::spawn(async move {
        let Some(view) = rds.view(&unit) else {
            return;
        };
        let volume = match (key, volume_key_info(&view.storage)) {
            (Some(key), Some(info)) => Some((key, info)),
            _ => None,
        };
        let arn = view.arn;
        match rds.runtime.provision(&spec, password, volume, start).await {
            Ok(()) => {
                let outcome = rds
                    .update_storage_and_status(&unit, status::AVAILABLE, |s| s.provisioned = true);
                if let Err(error) = outcome {
                    tracing::error!(%error, "could not record a provisioned database");
                }
                rds.event(&unit, &arn, "DB created", "creation");
            }
            Err(error) => {
                tracing::error!(database = unit.id(), %error, "provisioning failed");
                let _ = rds.set_status(&unit, status::FAILED);
                rds.event(
                    &unit,
                    &arn,
                    &format!("The database could not be created: {error}"),
                    "failure",
                );
            }
        }
    });
}

/// The wrapped-key facts an encrypted volume stores about itself.
pub(crate) fn volume_key_info(storage: &StorageRecord) -> Option<crate::storage::VolumeKeyInfo> {
    use base64::Engine as _;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(storage.wrapped_key.as_deref()?)
        .ok()?;
    Some(crate::storage::VolumeKeyInfo {
        kms_key_arn: storage.kms_key_arn.clone()?,
        wrapped_key: wrapped,
        encryption_context: storage.encryption_context.clone(),
    })
}

impl Rds {
    pub(crate) fn cluster_xml(&self, cluster: &ClusterRecord) -> String {
        let mut w = XmlWriter::new();
        self.render_cluster(&mut w, cluster);
        w.finish()
    }

    pub(crate) fn render_cluster(&self, w: &mut XmlWriter, cluster: &ClusterRecord) {
        let members = self.state.members_of(&cluster.account, &cluster.id);
        render::cluster(
            w,
            cluster,
            &members,
            &EndpointHost(&self.settings.endpoint_host),
        );
    }

    /// Picks the engine port: the requested one if free, else the next free one.
    pub(crate) fn choose_port(&self, requested: Option<i64>) -> RdsResult<u16> {
        let used = self.state.used_ports();
        if let Some(port) = requested {
            let port = u16::try_from(port)
                .ok()
                .filter(|p| *p >= 1150)
                .ok_or_else(|| {
                    RdsError::InvalidParameterValue(format!("Invalid port {port}: use 1150-65535."))
                })?;
            if used.contains(&port) || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(RdsError::InvalidParameterValue(format!(
                    "Port {port} is already in use on this host; choose another or leave Port unset."
                )));
            }
            return Ok(port);
        }
        (self.settings.first_port..=u16::MAX)
            .find(|port| {
                !used.contains(port) && std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok()
            })
            .ok_or_else(|| RdsError::Internal("no free port left for a database".into()))
    }

    /// Deletes a unit's data and records in the background.
    pub(crate) async fn destroy(&self, unit: Unit, resource_id: String, storage: StorageRecord) {
        if let Err(error) = self.runtime.destroy(&resource_id).await {
            tracing::error!(database = unit.id(), %error, "could not remove a database's files");
        }
        self.keys.release(unit.account(), &storage).await;
        let removed = match &unit {
            Unit::Cluster { account, id } => self.state.remove_cluster(account, id),
            Unit::Instance { account, id } => self.state.remove_instance(account, id),
        };
        if let Err(error) = removed {
            tracing::error!(database = unit.id(), %error, "could not remove a database's record");
        }
    }

    pub(crate) async fn stop_unit(&self, unit: Unit, resource_id: String) {
        let outcome = match self.runtime.stop(&resource_id).await {
            Ok(()) => self.set_status(&unit, status::STOPPED),
            Err(error) => {
                tracing::error!(database = unit.id(), %error, "could not stop a database");
                self.set_status(&unit, status::FAILED)
            }
        };
        if let Err(error) = outcome {
            tracing::error!(%error, "could not record a stopped database");
        }
    }

    /// Start on request: the key must be usable now (else `KMSKeyNotAccessibleFault`);
    /// the engine then starts in the background (`starting` → `available`).
    pub(crate) async fn start_unit_checked(
        self: &Arc<Self>,
        unit: &Unit,
        storage: &StorageRecord,
    ) -> RdsResult<()> {
        if storage.encrypted {
            self.keys.unwrap(unit.account(), storage).await.map_err(|error| {
                RdsError::KmsKeyNotAccessible(format!(
                    "The KMS key [{}] of this database does not exist, is not enabled or you do not have permissions to access it. ({}: {})",
                    storage.kms_key_arn.clone().unwrap_or_default(),
                    error.code,
                    error.message
                ))
            })?;
        }
        self.set_status(unit, status::STARTING)?;
        let rds = self.clone();
        let unit = unit.clone();
        tokio::spawn(async move {
            let outcome = if rds.has_engine(&unit) {
                rds.bring_up(&unit).await
            } else {
                rds.update_storage_and_status(&unit, status::AVAILABLE, |s| s.locked_since = None)
            };
            if let Err(error) = outcome {
                tracing::warn!(database = unit.id(), %error, "start failed");
            }
        });
        Ok(())
    }
}
