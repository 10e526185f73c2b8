//! DB snapshots and DB cluster snapshots: Create, Describe, Delete, Copy,
//! Modify/Describe...SnapshotAttribute(s), and restoring databases from them.
//!
//! The two families share one implementation; [`SnapshotKind`] supplies the names that
//! differ on the wire. What must happen before the response (checks, and every use of a
//! key the caller must be allowed — so that a missing permission fails the call, as on
//! AWS) happens here; copying bytes runs in the background while the snapshot shows
//! `creating` and its `PercentProgress`.

use std::sync::Arc;

use kura_crypto::SecretBytes;
use kura_edge::AuditDetails;
use kura_edge::xml::XmlWriter;

use super::{Call, add_resource, matches_filters, render_page};
use crate::Rds;
use crate::chunks::Persist;
use crate::error::{RdsError, RdsResult};
use crate::keys::KeyRole;
use crate::lifecycle::Unit;
use crate::model::{
    ClusterRecord, Engine, InstanceRecord, MANUAL, SnapshotKind, SnapshotRecord, StorageRecord,
    check_identifier, new_resource_id, status,
};
use crate::ops::clusters::volume_key_info;
use crate::params::Params;
use crate::render;
use crate::snapshots::{SourceImage, TargetVolume};

/// AWS's limit on accounts a snapshot can be shared with.
const SHARE_LIMIT: usize = 20;

impl Call<'_> {
    // ----- create -----------------------------------------------------------------

    pub async fn create_snapshot(
        &self,
        kind: SnapshotKind,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let id = check_identifier(kind.identifier_name(), p.required(kind.identifier_name())?)?;
        let arn = self.arn(kind.arn_kind(), &id);
        add_resource(audit, self.account(), kind.cloudtrail_type(), &arn);
        self.authorize(&format!("rds:Create{}", kind.element()), &arn)?;
        let source = self.snapshot_source(kind, p)?;
        if self.rds.state.snapshot(self.account(), kind, &id).is_some() {
            return Err(RdsError::SnapshotAlreadyExists(kind, id));
        }
        let given = p.tags("Tags");
        let record = SnapshotRecord {
            id,
            // Without tags of its own, a snapshot takes its database's when the database
            // says CopyTagsToSnapshot.
            tags: if given.is_empty() {
                source.tags.clone()
            } else {
                given
            },
            ..source
        };
        self.rds.state.insert_snapshot(record.clone())?;
        let rds = self.rds.clone();
        let snapshot = record.clone();
        tokio::spawn(async move { rds.capture(snapshot).await });
        Ok(self.rds.snapshot_xml(&record))
    }

    /// The final snapshot a deletion asks for, recorded now (so that a name already
    /// taken fails the deletion) and taken before the database's files go.
    pub(crate) fn final_snapshot(
        &self,
        kind: SnapshotKind,
        id: Option<String>,
        source: SourceDatabase,
    ) -> RdsResult<Option<SnapshotRecord>> {
        let Some(id) = id else {
            return Ok(None);
        };
        let record = SnapshotRecord {
            id,
            ..self.new_snapshot_record(kind, &source)?
        };
        self.rds.state.insert_snapshot(record.clone())?;
        Ok(Some(record))
    }

    /// A new snapshot record (without id or tags) describing the database named in the
    /// request, which must be in a state a snapshot can be taken in.
    fn snapshot_source(&self, kind: SnapshotKind, p: &Params<'_>) -> RdsResult<SnapshotRecord> {
        match kind {
            SnapshotKind::Instance => {
                let id = super::identifier_from(p.required("DBInstanceIdentifier")?, "db");
                let instance = self
                    .rds
                    .state
                    .instance(self.account(), &id)
                    .ok_or_else(|| RdsError::InstanceNotFound(id.clone()))?;
                if instance.cluster.is_some() {
                    return Err(RdsError::InvalidParameterValue(
                        "The specified instance is a member of a cluster and a snapshot cannot be created directly. Please use the CreateDBClusterSnapshot API instead.".into(),
                    ));
                }
                if ![status::AVAILABLE, status::STOPPED].contains(&instance.status.as_str()) {
                    return Err(RdsError::InvalidInstanceState(format!(
                        "Cannot create a snapshot because the database instance {id} is not currently in the available state."
                    )));
                }
                self.new_snapshot_record(kind, &instance.into())
            }
            SnapshotKind::Cluster => {
                let id = super::identifier_from(p.required("DBClusterIdentifier")?, "cluster");
                let cluster = self
                    .rds
                    .state
                    .cluster(self.account(), &id)
                    .ok_or_else(|| RdsError::ClusterNotFound(id.clone()))?;
                if ![status::AVAILABLE, status::STOPPED].contains(&cluster.status.as_str()) {
                    return Err(RdsError::InvalidClusterState(format!(
                        "Cannot create a snapshot because the DB cluster {id} is not currently in the available state."
                    )));
                }
                self.new_snapshot_record(kind, &cluster.into())
            }
        }
    }

    fn new_snapshot_record(
        &self,
        kind: SnapshotKind,
        source: &SourceDatabase,
    ) -> RdsResult<SnapshotRecord> {
        snapshot_record(kind, source, MANUAL, self.ctx.time)
    }

    // ----- describe, delete -------------------------------------------------------

    pub fn describe_snapshots(&self, kind: SnapshotKind, p: &Params<'_>) -> RdsResult<String> {
        self.authorize(
            &format!("rds:Describe{}s", kind.element()),
            &self.arn(kind.arn_kind(), "*"),
        )?;
        let (db_parameter, db_filter, id_filter, resource_filter) = match kind {
            SnapshotKind::Instance => (
                "DBInstanceIdentifier",
                "db-instance-id",
                "db-snapshot-id",
                "dbi-resource-id",
            ),
            SnapshotKind::Cluster => (
                "DBClusterIdentifier",
                "db-cluster-id",
                "db-cluster-snapshot-id",
                "db-cluster-resource-id",
            ),
        };
        let wanted = p.string(kind.identifier_name());
        let database = p.string(db_parameter);
        let snapshot_type = p.string("SnapshotType");
        let include_shared = p.bool("IncludeShared")?.unwrap_or(false);
        let include_public = p.bool("IncludePublic")?.unwrap_or(false);
        let filters = p.filters();
        let mut shown = Vec::new();
        for snapshot in self.rds.state.snapshots_visible_to(self.account(), kind) {
            let own = snapshot.account == self.account();
            let shared_with_me = !own && snapshot.shared_with.iter().any(|a| a == self.account());
            let public = snapshot.shared_with.iter().any(|a| a == "all");
            let named = wanted.is_some_and(|w| *w == snapshot.arn() || (own && *w == snapshot.id));
            let by_type = match snapshot_type {
                Some("shared") => shared_with_me,
                Some("public") => public && !own,
                Some(t) => own && snapshot.snapshot_type == t,
                None => own || (include_shared && shared_with_me) || (include_public && public),
            };
            let matches = matches_filters(&filters, |name| match name {
                n if n == db_filter => Some(snapshot.source_db.clone()),
                n if n == id_filter => Some(snapshot.id.clone()),
                n if n == resource_filter => Some(snapshot.source_resource_id.clone()),
                "snapshot-type" => Some(snapshot.snapshot_type.clone()),
                "engine" => Some(snapshot.engine.clone()),
                _ => None,
            })?;
            let of_database = database.is_none_or(|d| {
                super::identifier_from(
                    d,
                    if kind == SnapshotKind::Instance {
                        "db"
                    } else {
                        "cluster"
                    },
                ) == snapshot.source_db
            });
            if (named || (wanted.is_none() && by_type)) && matches && of_database {
                shown.push(snapshot);
            }
        }
        if let (Some(id), true) = (wanted, shown.is_empty()) {
            return Err(RdsError::SnapshotNotFound(kind, id.to_owned()));
        }
        render_page(
            p,
            shown,
            SnapshotRecord::arn,
            &format!("{}s", kind.element()),
            render::snapshot,
        )
    }

    pub async fn delete_snapshot(
        &self,
        kind: SnapshotKind,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let snapshot = self.own_snapshot(kind, p.required(kind.identifier_name())?, audit)?;
        self.authorize(&format!("rds:Delete{}", kind.element()), &snapshot.arn())?;
        if snapshot.snapshot_type != MANUAL {
            return Err(RdsError::InvalidSnapshotState(
                kind,
                "Only manual snapshots may be deleted; automated snapshots expire with the backup retention period.".into(),
            ));
        }
        // A copy still running holds a grant on another account's key; it goes now, not
        // when the background work ends (a restart in between would forget it).
        let held = match snapshot.source_grant {
            Some(_) => self.rds.take_source_grant(&snapshot),
            None => None,
        };
        self.rds
            .state
            .remove_snapshot(self.account(), kind, &snapshot.id)?;
        if let Some(held) = held {
            self.rds.keys.release_held(self.account(), &held).await;
        }
        // A snapshot still being made is cancelled: its background work sees the record
        // gone when it ends and discards what it wrote (see `finish_snapshot`).
        if snapshot.status != status::CREATING {
            let rds = self.rds.clone();
            let removed = snapshot.clone();
            tokio::spawn(async move { rds.discard_snapshot_data(&removed).await });
        }
        Ok(self.rds.snapshot_xml(&SnapshotRecord {
            status: "deleted".to_owned(),
            ..snapshot
        }))
    }

    /// A snapshot of the caller's account, by identifier or ARN.
    fn own_snapshot(
        &self,
        kind: SnapshotKind,
        name: &str,
        audit: &mut AuditDetails,
    ) -> RdsResult<SnapshotRecord> {
        let id = super::identifier_from(name, kind.arn_kind());
        let snapshot = self
            .rds
            .state
            .snapshot(self.account(), kind, &id)
            .ok_or_else(|| RdsError::SnapshotNotFound(kind, id.clone()))?;
        add_resource(
            audit,
            self.account(),
            kind.cloudtrail_type(),
            &snapshot.arn(),
        );
        Ok(snapshot)
    }

    /// A snapshot the caller may copy or restore: its own by identifier or ARN, another
    /// account's (shared with it) by ARN only, as on AWS.
    fn usable_snapshot(
        &self,
        kind: SnapshotKind,
        name: &str,
        audit: &mut AuditDetails,
    ) -> RdsResult<SnapshotRecord> {
        let foreign = name.strip_prefix("arn:aws:rds:").and_then(|rest| {
            let mut parts = rest.splitn(4, ':');
            let (_region, account, resource_kind, id) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            (resource_kind == kind.arn_kind() && account != self.account())
                .then(|| (account.to_owned(), id.to_ascii_lowercase()))
        });
        let snapshot = match foreign {
            None => self.own_snapshot(kind, name, audit)?,
            Some((account, id)) => self
                .rds
                .state
                .snapshot(&account, kind, &id)
                .filter(|s| s.visible_to(self.account()))
                .ok_or_else(|| RdsError::SnapshotNotFound(kind, name.to_owned()))?,
        };
        add_resource(
            audit,
            &snapshot.account,
            kind.cloudtrail_type(),
            &snapshot.arn(),
        );
        if snapshot.status != status::AVAILABLE {
            return Err(RdsError::InvalidSnapshotState(
                kind,
                format!(
                    "{} {} is not in available state (it is {}).",
                    kind.element(),
                    snapshot.id,
                    snapshot.status
                ),
            ));
        }
        Ok(snapshot)
    }

    // ----- copy -------------------------------------------------------------------

    pub async fn copy_snapshot(
        &self,
        kind: SnapshotKind,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let (source_parameter, target_parameter) = match kind {
            SnapshotKind::Instance => ("SourceDBSnapshotIdentifier", "TargetDBSnapshotIdentifier"),
            SnapshotKind::Cluster => (
                "SourceDBClusterSnapshotIdentifier",
                "TargetDBClusterSnapshotIdentifier",
            ),
        };
        let source = self.usable_snapshot(kind, p.required(source_parameter)?, audit)?;
        let id = check_identifier(target_parameter, p.required(target_parameter)?)?;
        let arn = self.arn(kind.arn_kind(), &id);
        add_resource(audit, self.account(), kind.cloudtrail_type(), &arn);
        self.authorize(&format!("rds:Copy{}", kind.element()), &arn)?;
        if self.rds.state.snapshot(self.account(), kind, &id).is_some() {
            return Err(RdsError::SnapshotAlreadyExists(kind, id));
        }
        let foreign = source.account != self.account();
        let kms_key_id = p.string("KmsKeyId").filter(|k| !k.is_empty());
        let rekey = match kms_key_id {
            Some(key) => source.storage.kms_key_arn.as_deref() != Some(key),
            None => false,
        };
        if foreign && source.storage.encrypted && kms_key_id.is_none() {
            return Err(RdsError::InvalidParameterValue(
                "KmsKeyId is required to copy an encrypted snapshot shared from another account: name a KMS key of this account (or one this account may use).".into(),
            ));
        }
        if kind == SnapshotKind::Cluster && !source.storage.encrypted && kms_key_id.is_some() {
            return Err(RdsError::InvalidParameterCombination(
                "An unencrypted DB cluster snapshot cannot be encrypted while it is copied; restore it with KmsKeyId instead.".into(),
            ));
        }
        let tags = match (p.tags("Tags"), p.bool("CopyTags")?.unwrap_or(false)) {
            (given, _) if !given.is_empty() => given,
            (_, true) => source.tags.clone(),
            _ => Vec::new(),
        };
        let mut record = SnapshotRecord {
            account: self.account().to_owned(),
            region: self.rds.region.to_string(),
            id,
            snapshot_type: MANUAL.to_owned(),
            data_id: new_resource_id("snap-")?,
            status: status::CREATING.to_owned(),
            percent_progress: 0,
            created: self.ctx.time,
            source_snapshot_arn: Some(source.arn()),
            shared_with: Vec::new(),
            tags,
            source_grant: None,
            ..source.clone()
        };
        let plan = if rekey || (foreign && source.storage.encrypted) {
            // Every key use the caller must be allowed happens now, so that a missing
            // permission fails the call itself. The grant on a shared source's key stays
            // until the copy ends, so that the copy can resume after a restart.
            let source_key = if foreign && source.storage.encrypted {
                let (key, held) = self
                    .rds
                    .keys
                    .hold_shared_key(self.ctx, &source.storage)
                    .await?;
                record.source_grant = Some(held);
                Some(key)
            } else {
                self.source_volume_key(&source, KeyRole::Source).await?
            };
            let target = self
                .rds
                .keys
                .new_storage_key(self.ctx, kms_key_id, &record.data_id, KeyRole::Target)
                .await;
            let target = match target {
                Ok(target) => target,
                Err(error) => {
                    if let Some(held) = &record.source_grant {
                        self.rds.keys.release_held(self.account(), held).await;
                    }
                    return Err(error);
                }
            };
            record.storage = StorageRecord {
                port: source.storage.port,
                ..target.storage
            };
            CopyPlan::Reencrypt {
                source_key,
                target_key: target.key,
            }
        } else {
            record.storage.grant_id = None;
            CopyPlan::SameKey
        };
        self.rds.state.insert_snapshot(record.clone())?;
        let rds = self.rds.clone();
        let copy = record.clone();
        tokio::spawn(async move { rds.complete_copy(source, copy, plan).await });
        Ok(self.rds.snapshot_xml(&record))
    }

    /// The plaintext volume key of a snapshot, for the service to read it: through the
    /// snapshot's own grant in this account, or a grant the caller gives on the key of
    /// a snapshot shared from another account. `None` for an unencrypted snapshot.
    async fn source_volume_key(
        &self,
        source: &SnapshotRecord,
        role: KeyRole,
    ) -> RdsResult<Option<SecretBytes>> {
        if !source.storage.encrypted {
            return Ok(None);
        }
        let key = if source.account == self.account() {
            let arn = source.storage.kms_key_arn.clone().unwrap_or_default();
            self.rds
                .keys
                .unwrap(&source.account, &source.storage)
                .await
                .map_err(|e| role.not_accessible(&arn, &e))?
        } else {
            self.rds
                .keys
                .borrow_shared_key(self.ctx, &source.storage)
                .await?
        };
        Ok(Some(key))
    }

    // ----- sharing ----------------------------------------------------------------

    pub async fn modify_snapshot_attribute(
        &self,
        kind: SnapshotKind,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let name = p.required(kind.identifier_name())?;
        if name.starts_with("rds:") {
            // AWS's answer for automated snapshots, which cannot be shared.
            return Err(RdsError::InvalidParameterValue(format!(
                "The parameter {} is not a valid identifier. Identifiers must begin with a letter; must contain only ASCII letters, digits, and hyphens; and must not end with a hyphen or contain two consecutive hyphens.",
                kind.identifier_name()
            )));
        }
        let snapshot = self.own_snapshot(kind, name, audit)?;
        self.authorize(
            &format!("rds:Modify{}Attribute", kind.element()),
            &snapshot.arn(),
        )?;
        let attribute = p.required("AttributeName")?;
        if attribute != "restore" {
            return Err(RdsError::InvalidParameterValue(format!(
                "Invalid snapshot attribute name: {attribute}. The only attribute is restore."
            )));
        }
        let (add, remove) = (p.list("ValuesToAdd"), p.list("ValuesToRemove"));
        if add.iter().any(|a| remove.contains(a)) {
            return Err(RdsError::InvalidParameterCombination(
                "A value cannot be both added and removed in one request.".into(),
            ));
        }
        for value in add.iter().chain(&remove) {
            let account_id = value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit());
            if !(account_id || value == "all") {
                return Err(RdsError::InvalidParameterValue(format!(
                    "Invalid value {value} for the restore attribute: give 12-digit account ids, or all."
                )));
            }
        }
        if snapshot.storage.encrypted && !add.is_empty() {
            if add.iter().any(|a| a == "all") {
                return Err(RdsError::InvalidParameterValue(
                    "Encrypted snapshots cannot be made public: share them with account ids instead.".into(),
                ));
            }
            let key = snapshot.storage.kms_key_arn.clone().unwrap_or_default();
            if self.rds.keys.is_aws_managed(self.account(), &key).await {
                return Err(RdsError::InvalidParameterValue(format!(
                    "Snapshots encrypted with the AWS managed key aws/rds ({key}) cannot be shared: its key policy cannot let other accounts use it. Copy the snapshot under a customer managed key and share the copy."
                )));
            }
        }
        let mut shared = snapshot.shared_with.clone();
        shared.retain(|a| !remove.contains(a));
        for account in add {
            if !shared.contains(&account) {
                shared.push(account);
            }
        }
        if shared.iter().filter(|a| *a != "all").count() > SHARE_LIMIT {
            return Err(RdsError::SharedSnapshotQuotaExceeded(format!(
                "A snapshot can be shared with at most {SHARE_LIMIT} accounts."
            )));
        }
        let updated = self
            .rds
            .state
            .update_snapshot(self.account(), kind, &snapshot.id, |s| {
                s.shared_with = shared;
                Ok(())
            })?;
        Ok(attributes_xml(&updated))
    }

    pub fn describe_snapshot_attributes(
        &self,
        kind: SnapshotKind,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let snapshot = self.own_snapshot(kind, p.required(kind.identifier_name())?, audit)?;
        self.authorize(
            &format!("rds:Describe{}Attributes", kind.element()),
            &snapshot.arn(),
        )?;
        Ok(attributes_xml(&snapshot))
    }

    // ----- restore ----------------------------------------------------------------

    pub async fn restore_instance_from_snapshot(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let (source, id) = self.begin_restore(SnapshotKind::Instance, p, audit)?;
        let engine = Engine::parse(p.string("Engine").unwrap_or(&source.engine))?;
        let (backup_retention, backup_window) = crate::backups::requested_settings(p, false)?;
        let port = self.rds.choose_port(p.int("Port")?)?;
        let resource_id = new_resource_id("db-")?;
        let (storage, image) = self
            .restored_storage(&source, None, &resource_id, port)
            .await?;
        let record = InstanceRecord {
            account: self.account().to_owned(),
            region: self.rds.region.to_string(),
            id: id.clone(),
            resource_id,
            cluster: None,
            instance_class: p
                .string("DBInstanceClass")
                .unwrap_or("db.t3.micro")
                .to_owned(),
            engine: engine.name().to_owned(),
            engine_version: source.engine_version.clone(),
            master_username: source.master_username.clone(),
            db_name: source.database_name.clone(),
            status: status::CREATING.to_owned(),
            storage: Some(storage.clone()),
            allocated_storage: source.allocated_storage,
            created: self.ctx.time,
            backup_retention,
            backup_window,
            deletion_protection: p.bool("DeletionProtection")?.unwrap_or(false),
            copy_tags_to_snapshot: p.bool("CopyTagsToSnapshot")?.unwrap_or(false),
            tags: p.tags("Tags"),
        };
        self.rds.state.insert_instance(record.clone())?;
        self.spawn_restore(
            Unit::Instance {
                account: self.account().to_owned(),
                id,
            },
            source,
            image,
        );
        Ok(self.rds.instance_xml(&record))
    }

    pub async fn restore_cluster_from_snapshot(
        &self,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<String> {
        let (source, id) = self.begin_restore(SnapshotKind::Cluster, p, audit)?;
        let engine = Engine::parse(p.required("Engine")?)?;
        if engine.family() != Engine::parse(&source.engine)?.family() {
            return Err(RdsError::InvalidParameterCombination(format!(
                "The snapshot is of engine {}; it cannot be restored as {}.",
                source.engine,
                engine.name()
            )));
        }
        let (backup_retention, backup_window) = crate::backups::requested_settings(p, true)?;
        let port = self.rds.choose_port(p.int("Port")?)?;
        let resource_id = new_resource_id("cluster-")?;
        let kms_key_id = p.string("KmsKeyId").filter(|k| !k.is_empty());
        let (storage, image) = self
            .restored_storage(&source, kms_key_id, &resource_id, port)
            .await?;
        let record = ClusterRecord {
            account: self.account().to_owned(),
            region: self.rds.region.to_string(),
            id: id.clone(),
            resource_id,
            engine: engine.name().to_owned(),
            engine_version: p
                .string("EngineVersion")
                .unwrap_or(&source.engine_version)
                .to_owned(),
            master_username: source.master_username.clone(),
            database_name: source.database_name.clone(),
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
        self.spawn_restore(
            Unit::Cluster {
                account: self.account().to_owned(),
                id,
            },
            source,
            image,
        );
        Ok(self.rds.cluster_xml(&record))
    }

    /// What both restores check first: the snapshot (usable by the caller), the new
    /// database's identifier (valid, authorized, free), and AWS's rule that an instance
    /// cannot be restored straight from another account's encrypted snapshot.
    fn begin_restore(
        &self,
        kind: SnapshotKind,
        p: &Params<'_>,
        audit: &mut AuditDetails,
    ) -> RdsResult<(SnapshotRecord, String)> {
        let (snapshot_parameter, db_parameter, arn_kind, resource_type) = match kind {
            SnapshotKind::Instance => (
                "DBSnapshotIdentifier",
                "DBInstanceIdentifier",
                "db",
                "AWS::RDS::DBInstance",
            ),
            SnapshotKind::Cluster => (
                "SnapshotIdentifier",
                "DBClusterIdentifier",
                "cluster",
                "AWS::RDS::DBCluster",
            ),
        };
        let source = self.usable_snapshot(kind, p.required(snapshot_parameter)?, audit)?;
        let id = check_identifier(db_parameter, p.required(db_parameter)?)?;
        let arn = self.arn(arn_kind, &id);
        add_resource(audit, self.account(), resource_type, &arn);
        let action = match kind {
            SnapshotKind::Instance => "rds:RestoreDBInstanceFromDBSnapshot",
            SnapshotKind::Cluster => "rds:RestoreDBClusterFromSnapshot",
        };
        self.authorize(action, &arn)?;
        let shared_encrypted = source.account != self.account() && source.storage.encrypted;
        if kind == SnapshotKind::Instance && shared_encrypted {
            return Err(RdsError::InvalidParameterValue(
                "Restoring db instance from cross account storage encrypted snapshot is not supported.".into(),
            ));
        }
        match kind {
            SnapshotKind::Instance if self.rds.state.instance(self.account(), &id).is_some() => {
                Err(RdsError::InstanceAlreadyExists(id))
            }
            SnapshotKind::Cluster if self.rds.state.cluster(self.account(), &id).is_some() => {
                Err(RdsError::ClusterAlreadyExists(id))
            }
            _ => Ok((source, id)),
        }
    }

    fn spawn_restore(&self, unit: Unit, source: SnapshotRecord, image: RestoreImage) {
        let rds = self.rds.clone();
        tokio::spawn(async move { rds.complete_restore(unit, source, image).await });
    }

    /// The storage of a database restored from `source` (under `kms_key_id`, or the
    /// snapshot's own key) and how its image is to be produced.
    async fn restored_storage(
        &self,
        source: &SnapshotRecord,
        kms_key_id: Option<&str>,
        resource_id: &str,
        port: u16,
    ) -> RdsResult<(StorageRecord, RestoreImage)> {
        let source_key = self.source_volume_key(source, KeyRole::Source).await?;
        let same_key = kms_key_id.is_none_or(|k| source.storage.kms_key_arn.as_deref() == Some(k));
        let (storage, image) = match (source_key, same_key) {
            (None, true) => (StorageRecord::default(), RestoreImage::AsIs),
            (Some(key), true) => {
                let arn = source.storage.kms_key_arn.clone().unwrap_or_default();
                let storage = self
                    .rds
                    .keys
                    .wrap_for_new_owner(self.ctx, &arn, resource_id, &key, KeyRole::Source)
                    .await?;
                (storage, RestoreImage::Rewrapped)
            }
            (source_key, false) => {
                let target = self
                    .rds
                    .keys
                    .new_storage_key(self.ctx, kms_key_id, resource_id, KeyRole::Specified)
                    .await?;
                let image = RestoreImage::Reencrypted {
                    source_key,
                    target_key: target.key,
                };
                (target.storage, image)
            }
        };
        Ok((StorageRecord { port, ..storage }, image))
    }
}

/// A new snapshot of `source` (id and tags to be set by the caller), `creating`.
pub(crate) fn snapshot_record(
    kind: SnapshotKind,
    source: &SourceDatabase,
    snapshot_type: &str,
    now: kura_types::Timestamp,
) -> RdsResult<SnapshotRecord> {
    Ok(SnapshotRecord {
        account: source.account.clone(),
        region: source.region.clone(),
        id: String::new(),
        kind,
        snapshot_type: snapshot_type.to_owned(),
        data_id: new_resource_id("snap-")?,
        source_db: source.id.clone(),
        source_resource_id: source.resource_id.clone(),
        source_created: source.created,
        engine: source.engine.clone(),
        engine_version: source.engine_version.clone(),
        master_username: source.master_username.clone(),
        database_name: source.database_name.clone(),
        allocated_storage: source.allocated_storage,
        status: status::CREATING.to_owned(),
        percent_progress: 0,
        created: now,
        storage: StorageRecord {
            grant_id: None,
            provisioned: false,
            locked_since: None,
            ..source.storage.clone()
        },
        source_snapshot_arn: None,
        shared_with: Vec::new(),
        tags: source.tags.clone(),
        source_grant: None,
    })
}

/// The facts of a database a snapshot is taken of.
pub(crate) struct SourceDatabase {
    account: String,
    region: String,
    id: String,
    resource_id: String,
    created: kura_types::Timestamp,
    engine: String,
    engine_version: String,
    master_username: String,
    database_name: Option<String>,
    allocated_storage: i64,
    storage: StorageRecord,
    /// Copied to a final snapshot when the database says `CopyTagsToSnapshot`.
    tags: Vec<(String, String)>,
}

impl SourceDatabase {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn resource_id(&self) -> &str {
        &self.resource_id
    }
}

impl From<InstanceRecord> for SourceDatabase {
    fn from(i: InstanceRecord) -> Self {
        Self {
            account: i.account,
            region: i.region,
            id: i.id,
            resource_id: i.resource_id,
            created: i.created,
            engine: i.engine,
            engine_version: i.engine_version,
            master_username: i.master_username,
            database_name: i.db_name,
            allocated_storage: i.allocated_storage,
            storage: i.storage.unwrap_or_default(),
            tags: if i.copy_tags_to_snapshot {
                i.tags
            } else {
                Vec::new()
            },
        }
    }
}

impl From<ClusterRecord> for SourceDatabase {
    fn from(c: ClusterRecord) -> Self {
        Self {
            account: c.account,
            region: c.region,
            id: c.id,
            resource_id: c.resource_id,
            created: c.created,
            engine: c.engine,
            engine_version: c.engine_version,
            master_username: c.master_username,
            database_name: c.database_name,
            allocated_storage: 1,
            storage: c.storage,
            tags: if c.copy_tags_to_snapshot {
                c.tags
            } else {
                Vec::new()
            },
        }
    }
}

/// How a copy gets its image.
pub(crate) enum CopyPlan {
    /// Same key (or no key): the copy shares the source's chunks.
    SameKey,
    /// Under another key: the files are re-encrypted under a fresh volume key.
    Reencrypt {
        source_key: Option<SecretBytes>,
        target_key: SecretBytes,
    },
}

/// How a restored database gets its image.
pub(crate) enum RestoreImage {
    /// Unencrypted: the files as they are.
    AsIs,
    /// Same volume key, wrapped anew for the database.
    Rewrapped,
    /// Under another key: re-encrypted under a fresh volume key.
    Reencrypted {
        source_key: Option<SecretBytes>,
        target_key: SecretBytes,
    },
}

fn attributes_xml(snapshot: &SnapshotRecord) -> String {
    let element = snapshot.kind.element();
    let mut w = XmlWriter::new();
    w.element(&format!("{element}AttributesResult"), |w| {
        w.leaf(snapshot.kind.identifier_name(), &snapshot.id);
        w.element(&format!("{element}Attributes"), |w| {
            w.element(&format!("{element}Attribute"), |w| {
                w.leaf("AttributeName", "restore");
                w.element("AttributeValues", |w| {
                    for account in &snapshot.shared_with {
                        w.leaf("AttributeValue", account);
                    }
                });
            });
        });
    });
    w.finish()
}

impl Rds {
    /// Snapshots and copies cut short by a stop of kura, to resume once the databases
    /// are back ([`Rds::resume_snapshots`]).
    pub(crate) fn interrupted_snapshots(&self) -> Vec<SnapshotRecord> {
        self.state
            .all_snapshots()
            .into_iter()
            .filter(|s| s.status == status::CREATING)
            .collect()
    }

    /// Finishes interrupted work. A snapshot is captured again: chunks already stored are
    /// not written twice, so an interrupted capture resumes where its data is unchanged. A
    /// copy is redone; the service reaches both keys through its grants (for a source
    /// shared by another account, the grant its caller gave for the copy's duration).
    pub(crate) async fn resume_snapshots(self: &Arc<Self>, interrupted: Vec<SnapshotRecord>) {
        for snapshot in interrupted {
            tracing::info!(snapshot = %snapshot.id, "resuming an interrupted snapshot");
            let Some(source_arn) = snapshot.source_snapshot_arn.clone() else {
                self.clone().capture(snapshot).await;
                continue;
            };
            let source = self
                .state
                .all_snapshots()
                .into_iter()
                .find(|s| s.arn() == source_arn && s.status == status::AVAILABLE);
            let plan = match &source {
                Some(source) => self.resumed_copy_plan(source, &snapshot).await,
                None => Err(RdsError::Internal(
                    "the source snapshot is gone or not available".into(),
                )),
            };
            match (source, plan) {
                (Some(source), Ok(plan)) => {
                    self.clone().complete_copy(source, snapshot, plan).await
                }
                (_, Err(error)) => self.finish_snapshot(&snapshot, Err(error)).await,
                (None, Ok(_)) => {}
            }
        }
    }

    async fn resumed_copy_plan(
        &self,
        source: &SnapshotRecord,
        copy: &SnapshotRecord,
    ) -> RdsResult<CopyPlan> {
        if copy.storage.wrapped_key == source.storage.wrapped_key {
            return Ok(CopyPlan::SameKey);
        }
        if source.account != copy.account && copy.source_grant.is_none() {
            return Err(RdsError::Internal(
                "a copy of another account's snapshot made before kura kept its grant cannot resume; delete it and copy again".into(),
            ));
        }
        let opened = |what: &'static str| {
            move |e: kura_edge::ApiError| RdsError::Internal(format!("opening the {what} key: {e}"))
        };
        // The service opens the source's key through its grant: the snapshot's own, or
        // the one held on a shared snapshot's key for this copy.
        let source_key = match source.storage.encrypted {
            true => Some(
                self.keys
                    .unwrap(&copy.account, &source.storage)
                    .await
                    .map_err(opened("source"))?,
            ),
            false => None,
        };
        let target_key = self
            .keys
            .unwrap(&copy.account, &copy.storage)
            .await
            .map_err(opened("target"))?;
        Ok(CopyPlan::Reencrypt {
            source_key,
            target_key,
        })
    }

    pub(crate) fn snapshot_xml(&self, snapshot: &SnapshotRecord) -> String {
        let mut w = XmlWriter::new();
        render::snapshot(&mut w, snapshot);
        w.finish()
    }

    /// Records progress; called often, writes only when the percentage moves.
    fn report_progress(&self, snapshot: &SnapshotRecord, done: u64, total: u64) {
        let percent = done
            .saturating_mul(99)
            .checked_div(total)
            .map_or(99, |p| u8::try_from(p.min(99)).unwrap_or(99));
        let current = self
            .state
            .snapshot(&snapshot.account, snapshot.kind, &snapshot.id)
            .map_or(0, |s| s.percent_progress);
        if percent >= current.saturating_add(5) {
            let _ =
                self.state
                    .update_snapshot(&snapshot.account, snapshot.kind, &snapshot.id, |s| {
                        s.percent_progress = percent;
                        Ok(())
                    });
        }
    }

    /// Takes the grant a copy holds on its source's key out of the copy's record, so that
    /// exactly one of the copy's end and its deletion retires it. `None` if the record is
    /// gone or holds none.
    pub(crate) fn take_source_grant(
        &self,
        snapshot: &SnapshotRecord,
    ) -> Option<crate::model::HeldGrant> {
        let mut held = None;
        let _ = self
            .state
            .update_snapshot(&snapshot.account, snapshot.kind, &snapshot.id, |s| {
                if s.data_id == snapshot.data_id {
                    held = s.source_grant.take();
                }
                Ok(())
            });
        held
    }

    /// Ends a snapshot's creation: `available` at 100%, or `failed`. A snapshot deleted
    /// while it was being made is discarded instead.
    async fn finish_snapshot(&self, snapshot: &SnapshotRecord, outcome: RdsResult<Option<String>>) {
        if snapshot.source_grant.is_some()
            && let Some(held) = self.take_source_grant(snapshot)
        {
            self.keys.release_held(&snapshot.account, &held).await;
        }
        let succeeded = outcome.is_ok();
        let grant_id = match outcome {
            Ok(grant_id) => grant_id,
            Err(error) => {
                tracing::error!(snapshot = %snapshot.id, %error, "snapshot failed");
                None
            }
        };
        let recorded =
            self.state
                .update_snapshot(&snapshot.account, snapshot.kind, &snapshot.id, |s| {
                    if s.data_id != snapshot.data_id {
                        // Deleted, and the name taken again by a new snapshot.
                        return Err(RdsError::SnapshotNotFound(s.kind, s.id.clone()));
                    }
                    s.source_grant = None;
                    if succeeded {
                        s.status = status::AVAILABLE.to_owned();
                        s.percent_progress = 100;
                    } else {
                        s.status = status::FAILED.to_owned();
                    }
                    if grant_id.is_some() {
                        s.storage.grant_id = grant_id.clone();
                    }
                    Ok(())
                });
        match recorded {
            Ok(_) => {}
            Err(RdsError::SnapshotNotFound(..)) => {
                let cancelled = SnapshotRecord {
                    storage: StorageRecord {
                        grant_id: grant_id.or_else(|| snapshot.storage.grant_id.clone()),
                        ..snapshot.storage.clone()
                    },
                    ..snapshot.clone()
                };
                self.discard_snapshot_data(&cancelled).await;
            }
            Err(error) => {
                tracing::warn!(snapshot = %snapshot.id, %error, "could not record a snapshot's end")
            }
        }
    }

    /// Retires a deleted snapshot's grant and removes its image.
    pub(crate) async fn discard_snapshot_data(&self, snapshot: &SnapshotRecord) {
        self.keys
            .release(&snapshot.account, &snapshot.storage)
            .await;
        if let Err(error) = self.snapshot_data.remove(&snapshot.data_id).await {
            tracing::warn!(snapshot = %snapshot.id, %error, "could not remove a snapshot's data");
        }
    }

    /// Takes the image of the snapshot's database, holding its writes meanwhile, and
    /// gives the snapshot its own grant on the key.
    pub(crate) async fn capture(self: Arc<Self>, snapshot: SnapshotRecord) {
        let outcome = async {
            let grant = self
                .keys
                .grant_for_snapshot(&snapshot.account, &snapshot.storage, &snapshot.data_id)
                .await
                .map_err(|e| RdsError::Internal(format!("granting the snapshot its key: {e}")))?;
            let image = self
                .runtime
                .image_dir(&snapshot.source_resource_id, snapshot.storage.encrypted);
            let frozen = self.runtime.freeze(&snapshot.source_resource_id).await?;
            let captured = self
                .snapshot_data
                .capture(&snapshot.data_id, &image, &|done, total| {
                    self.report_progress(&snapshot, done, total)
                })
                .await;
            frozen.thaw().await;
            captured.map(|()| grant)
        }
        .await;
        self.finish_snapshot(&snapshot, outcome).await;
    }

    /// Takes a deletion's final snapshot, if it asked for one.
    pub(crate) async fn capture_final(self: Arc<Self>, snapshot: Option<SnapshotRecord>) {
        if let Some(snapshot) = snapshot {
            self.capture(snapshot).await;
        }
    }

    pub(crate) async fn complete_copy(
        self: Arc<Self>,
        source: SnapshotRecord,
        copy: SnapshotRecord,
        plan: CopyPlan,
    ) {
        let outcome = match plan {
            CopyPlan::SameKey => {
                async {
                    self.snapshot_data
                        .duplicate(&source.data_id, &copy.data_id)?;
                    self.keys
                        .grant_for_snapshot(&copy.account, &copy.storage, &copy.data_id)
                        .await
                        .map_err(|e| RdsError::Internal(format!("granting the copy its key: {e}")))
                }
                .await
            }
            CopyPlan::Reencrypt {
                source_key,
                target_key,
            } => {
                self.reencrypt_copy(&source, &copy, source_key, target_key)
                    .await
            }
        };
        self.finish_snapshot(&copy, outcome).await;
    }

    async fn reencrypt_copy(
        &self,
        source: &SnapshotRecord,
        copy: &SnapshotRecord,
        source_key: Option<SecretBytes>,
        target_key: SecretBytes,
    ) -> RdsResult<Option<String>> {
        let info = volume_key_info(&copy.storage)
            .ok_or_else(|| RdsError::Internal("the copy has no wrapped key".into()))?;
        let staging = self.settings.data_dir.join("scratch").join(&copy.data_id);
        let outcome = async {
            self.snapshot_data
                .reencrypt(
                    SourceImage {
                        data_id: &source.data_id,
                        key: source_key,
                    },
                    &staging,
                    TargetVolume {
                        info,
                        key: target_key,
                    },
                    Persist::Scratch,
                    &|done, total| self.report_progress(copy, done, total),
                )
                .await?;
            self.snapshot_data
                .capture(&copy.data_id, &staging, &|_, _| {})
                .await
        }
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        outcome.map(|()| None)
    }

    /// Writes a restored database's image, then brings it up: a standalone instance
    /// starts serving; a cluster waits for its first instance.
    async fn complete_restore(
        self: Arc<Self>,
        unit: Unit,
        source: SnapshotRecord,
        image: RestoreImage,
    ) {
        let Some(view) = self.view(&unit) else {
            return;
        };
        let outcome = async {
            let encrypted = view.spec.encrypted;
            let target = self
                .runtime
                .prepare_restore(&view.spec.resource_id, encrypted)?;
            match image {
                RestoreImage::AsIs => {
                    self.snapshot_data
                        .materialize(&source.data_id, &target, &|_, _| {})
                        .await?
                }
                RestoreImage::Rewrapped => {
                    self.snapshot_data
                        .materialize(&source.data_id, &target, &|_, _| {})
                        .await?;
                    let info = volume_key_info(&view.storage)
                        .ok_or_else(|| RdsError::Internal("no wrapped key".into()))?;
                    self.runtime.finish_restore(&view.spec.resource_id, &info)?;
                }
                RestoreImage::Reencrypted {
                    source_key,
                    target_key,
                } => {
                    let info = volume_key_info(&view.storage)
                        .ok_or_else(|| RdsError::Internal("no wrapped key".into()))?;
                    self.snapshot_data
                        .reencrypt(
                            SourceImage {
                                data_id: &source.data_id,
                                key: source_key,
                            },
                            &target,
                            TargetVolume {
                                info,
                                key: target_key,
                            },
                            Persist::Durable,
                            &|_, _| {},
                        )
                        .await?;
                }
            }
            self.update_storage_and_status(&unit, status::AVAILABLE, |s| s.provisioned = true)?;
            match unit {
                Unit::Instance { .. } => self.bring_up(&unit).await,
                Unit::Cluster { .. } => Ok(()),
            }
        }
        .await;
        match outcome {
            Ok(()) => self.event(&unit, &view.arn, "Restored from snapshot", "creation"),
            Err(error) => {
                tracing::error!(database = unit.id(), %error, "restore failed");
                let _ = self.set_status(&unit, status::FAILED);
                self.event(
                    &unit,
                    &view.arn,
                    &format!("The database could not be restored: {error}"),
                    "failure",
                );
            }
        }
    }
}
