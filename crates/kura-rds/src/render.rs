//! XML of the RDS shapes clients read (`DBCluster`, `DBInstance`, `Event`, tags), with
//! AWS's element names and list member names.

use kura_edge::xml::XmlWriter;

use crate::model::{
    ClusterRecord, EventRecord, InstanceRecord, SnapshotKind, SnapshotRecord, StorageRecord,
};

/// How clients reach a database: the advertised host for every endpoint.
pub(crate) struct EndpointHost<'a>(pub &'a str);

fn bool_text(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

pub(crate) fn tags(w: &mut XmlWriter, tags: &[(String, String)]) {
    w.element("TagList", |w| {
        for (key, value) in tags {
            w.element("Tag", |w| {
                w.leaf("Key", key).leaf("Value", value);
            });
        }
    });
}

fn encryption(w: &mut XmlWriter, storage: &StorageRecord, encrypted_element: &str) {
    w.leaf(encrypted_element, bool_text(storage.encrypted));
    w.leaf(
        "StorageEncryptionType",
        if storage.encrypted { "sse-kms" } else { "none" },
    );
    w.optional_leaf("KmsKeyId", storage.kms_key_arn.as_deref());
}

pub(crate) fn cluster(
    w: &mut XmlWriter,
    c: &ClusterRecord,
    members: &[InstanceRecord],
    host: &EndpointHost<'_>,
) {
    w.element("DBCluster", |w| {
        w.leaf("AllocatedStorage", "1");
        w.element("AvailabilityZones", |w| {
            w.leaf("AvailabilityZone", &format!("{}a", c.region));
        });
        w.leaf("BackupRetentionPeriod", &c.backup_retention.to_string());
        w.optional_leaf("DatabaseName", c.database_name.as_deref());
        w.leaf("DBClusterIdentifier", &c.id);
        w.leaf("DBClusterParameterGroup", &format!("default.{}", c.engine));
        w.leaf("Status", &c.status);
        w.leaf("EarliestRestorableTime", &c.created.iso8601_millis());
        w.leaf("Endpoint", host.0);
        w.leaf("ReaderEndpoint", host.0);
        w.leaf("MultiAZ", "false");
        w.leaf("Engine", &c.engine);
        w.leaf("EngineVersion", &c.engine_version);
        w.leaf("Port", &c.storage.port.to_string());
        w.leaf("MasterUsername", &c.master_username);
        w.leaf("PreferredBackupWindow", &c.backup_window);
        w.leaf(
            "PreferredMaintenanceWindow",
            crate::window::MAINTENANCE_WINDOW,
        );
        w.element("DBClusterMembers", |w| {
            for (index, member) in members.iter().enumerate() {
                w.element("DBClusterMember", |w| {
                    w.leaf("DBInstanceIdentifier", &member.id)
                        .leaf("IsClusterWriter", bool_text(index == 0))
                        .leaf("DBClusterParameterGroupStatus", "in-sync")
                        .leaf("PromotionTier", "1");
                });
            }
        });
        w.element("VpcSecurityGroups", |_| {});
        w.leaf("HostedZoneId", "Z2R2ITUGPM61AM");
        encryption(w, &c.storage, "StorageEncrypted");
        w.leaf("DbClusterResourceId", &c.resource_id);
        w.leaf("DBClusterArn", &c.arn());
        w.leaf("IAMDatabaseAuthenticationEnabled", "false");
        w.leaf("ClusterCreateTime", &c.created.iso8601_millis());
        w.leaf("EngineMode", "provisioned");
        w.leaf("DeletionProtection", bool_text(c.deletion_protection));
        w.leaf("HttpEndpointEnabled", "false");
        w.leaf("CopyTagsToSnapshot", bool_text(c.copy_tags_to_snapshot));
        w.leaf("CrossAccountClone", "false");
        tags(w, &c.tags);
    });
}

/// What an Aurora member shows of its cluster, and a standalone instance of its own.
pub(crate) struct Inherited<'a> {
    pub storage: &'a StorageRecord,
    pub backup_retention: i64,
    pub backup_window: &'a str,
}

pub(crate) fn instance(
    w: &mut XmlWriter,
    i: &InstanceRecord,
    inherited: &Inherited<'_>,
    host: &EndpointHost<'_>,
) {
    let storage = inherited.storage;
    w.element("DBInstance", |w| {
        w.leaf("DBInstanceIdentifier", &i.id);
        w.leaf("DBInstanceClass", &i.instance_class);
        w.leaf("Engine", &i.engine);
        w.leaf("DBInstanceStatus", &i.status);
        w.leaf("MasterUsername", &i.master_username);
        w.optional_leaf("DBName", i.db_name.as_deref());
        if i.status != crate::model::status::CREATING {
            w.element("Endpoint", |w| {
                w.leaf("Address", host.0)
                    .leaf("Port", &storage.port.to_string())
                    .leaf("HostedZoneId", "Z2R2ITUGPM61AM");
            });
        }
        w.leaf("AllocatedStorage", &i.allocated_storage.to_string());
        w.leaf("InstanceCreateTime", &i.created.iso8601_millis());
        w.leaf("PreferredBackupWindow", inherited.backup_window);
        w.leaf(
            "BackupRetentionPeriod",
            &inherited.backup_retention.to_string(),
        );
        w.element("DBSecurityGroups", |_| {});
        w.element("VpcSecurityGroups", |_| {});
        w.element("DBParameterGroups", |w| {
            w.element("DBParameterGroup", |w| {
                w.leaf("DBParameterGroupName", &format!("default.{}", i.engine))
                    .leaf("ParameterApplyStatus", "in-sync");
            });
        });
        w.leaf("AvailabilityZone", &format!("{}a", i.region));
        w.leaf(
            "PreferredMaintenanceWindow",
            crate::window::MAINTENANCE_WINDOW,
        );
        w.element("PendingModifiedValues", |_| {});
        w.leaf("MultiAZ", "false");
        w.leaf("EngineVersion", &i.engine_version);
        w.leaf("AutoMinorVersionUpgrade", "true");
        w.leaf("LicenseModel", "general-public-license");
        w.leaf("PubliclyAccessible", "false");
        w.leaf(
            "StorageType",
            if i.cluster.is_some() { "aurora" } else { "gp3" },
        );
        w.leaf("DbInstancePort", "0");
        w.optional_leaf("DBClusterIdentifier", i.cluster.as_deref());
        encryption(w, storage, "StorageEncrypted");
        w.leaf("DbiResourceId", &i.resource_id);
        w.leaf("CACertificateIdentifier", "kura-local-ca");
        w.leaf("CopyTagsToSnapshot", bool_text(i.copy_tags_to_snapshot));
        w.leaf("MonitoringInterval", "0");
        w.leaf("PromotionTier", "1");
        w.leaf("DBInstanceArn", &i.arn());
        w.leaf("IAMDatabaseAuthenticationEnabled", "false");
        w.leaf("PerformanceInsightsEnabled", "false");
        w.leaf("DeletionProtection", bool_text(i.deletion_protection));
        tags(w, &i.tags);
    });
}

pub(crate) fn event(w: &mut XmlWriter, e: &EventRecord) {
    w.element("Event", |w| {
        w.leaf("SourceIdentifier", &e.source_identifier)
            .leaf("SourceType", &e.source_type)
            .leaf("Message", &e.message);
        w.element("EventCategories", |w| {
            for category in &e.categories {
                w.leaf("EventCategory", category);
            }
        });
        w.leaf("Date", &e.date.iso8601_millis())
            .leaf("SourceArn", &e.source_arn);
    });
}

/// A `DBSnapshot` or `DBClusterSnapshot` element.
pub(crate) fn snapshot(w: &mut XmlWriter, s: &SnapshotRecord) {
    w.element(s.kind.element(), |w| {
        w.leaf(s.kind.identifier_name(), &s.id);
        match s.kind {
            SnapshotKind::Instance => {
                w.leaf("DBInstanceIdentifier", &s.source_db);
                w.leaf("AvailabilityZone", &format!("{}a", s.region));
                w.leaf("InstanceCreateTime", &s.source_created.iso8601_millis());
            }
            SnapshotKind::Cluster => {
                w.element("AvailabilityZones", |w| {
                    w.leaf("AvailabilityZone", &format!("{}a", s.region));
                });
                w.leaf("DBClusterIdentifier", &s.source_db);
                w.leaf("ClusterCreateTime", &s.source_created.iso8601_millis());
                w.leaf("EngineMode", "provisioned");
            }
        }
        w.leaf("SnapshotCreateTime", &s.created.iso8601_millis());
        w.leaf("Engine", &s.engine);
        w.leaf("EngineVersion", &s.engine_version);
        w.leaf("AllocatedStorage", &s.allocated_storage.to_string());
        w.leaf("Status", &s.status);
        w.leaf("Port", &s.storage.port.to_string());
        w.leaf("MasterUsername", &s.master_username);
        w.leaf("LicenseModel", "general-public-license");
        w.leaf("SnapshotType", &s.snapshot_type);
        w.leaf("PercentProgress", &s.percent_progress.to_string());
        w.leaf("SourceRegion", &s.region);
        w.leaf("IAMDatabaseAuthenticationEnabled", "false");
        match s.kind {
            SnapshotKind::Instance => {
                w.optional_leaf(
                    "SourceDBSnapshotIdentifier",
                    s.source_snapshot_arn.as_deref(),
                );
                w.leaf("StorageType", "gp3");
                encryption(w, &s.storage, "Encrypted");
                w.leaf("DBSnapshotArn", &s.arn());
                w.leaf("DbiResourceId", &s.source_resource_id);
                w.leaf("OriginalSnapshotCreateTime", &s.created.iso8601_millis());
                w.leaf("SnapshotTarget", "region");
            }
            SnapshotKind::Cluster => {
                w.optional_leaf(
                    "SourceDBClusterSnapshotArn",
                    s.source_snapshot_arn.as_deref(),
                );
                w.leaf("StorageType", "aurora");
                encryption(w, &s.storage, "StorageEncrypted");
                w.leaf("DBClusterSnapshotArn", &s.arn());
                w.leaf("DbClusterResourceId", &s.source_resource_id);
            }
        }
        tags(w, &s.tags);
    });
}
