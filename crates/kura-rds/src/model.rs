//! RDS records as stored, and the vocabulary of engines and statuses.

use std::collections::BTreeMap;

use kura_engine::EngineFamily;
use kura_store::Table;
use kura_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{RdsError, RdsResult};

pub(crate) const CLUSTERS: Table = Table("rds.clusters");
pub(crate) const INSTANCES: Table = Table("rds.instances");
pub(crate) const EVENTS: Table = Table("rds.events");
pub(crate) const SNAPSHOTS: Table = Table("rds.snapshots");

/// The engines kura offers, and what runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    AuroraPostgresql,
    Postgres,
    AuroraMysql,
    Mysql,
    Mariadb,
}

impl Engine {
    pub fn parse(name: &str) -> RdsResult<Self> {
        match name {
            "aurora-postgresql" => Ok(Self::AuroraPostgresql),
            "postgres" => Ok(Self::Postgres),
            "aurora-mysql" => Ok(Self::AuroraMysql),
            "mysql" => Ok(Self::Mysql),
            "mariadb" => Ok(Self::Mariadb),
            other => Err(RdsError::InvalidParameterValue(format!(
                "Invalid DB engine: {other}. kura serves aurora-postgresql and postgres (PostgreSQL 15), and aurora-mysql, mysql and mariadb (MariaDB)."
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::AuroraPostgresql => "aurora-postgresql",
            Self::Postgres => "postgres",
            Self::AuroraMysql => "aurora-mysql",
            Self::Mysql => "mysql",
            Self::Mariadb => "mariadb",
        }
    }

    pub fn family(self) -> EngineFamily {
        match self {
            Self::AuroraPostgresql | Self::Postgres => EngineFamily::Postgres,
            Self::AuroraMysql | Self::Mysql | Self::Mariadb => EngineFamily::MariaDb,
        }
    }

    pub fn is_aurora(self) -> bool {
        matches!(self, Self::AuroraPostgresql | Self::AuroraMysql)
    }

    /// The version reported when none is asked for: the software actually run.
    pub fn default_version(self) -> &'static str {
        match self.family() {
            EngineFamily::Postgres => "15.18",
            EngineFamily::MariaDb => "10.11",
        }
    }
}

/// Statuses as AWS names them on the wire.
pub(crate) mod status {
    pub const AVAILABLE: &str = "available";
    pub const BACKING_UP: &str = "backing-up";
    pub const CREATING: &str = "creating";
    pub const DELETING: &str = "deleting";
    pub const FAILED: &str = "failed";
    pub const INACCESSIBLE: &str = "inaccessible-encryption-credentials";
    pub const INACCESSIBLE_RECOVERABLE: &str = "inaccessible-encryption-credentials-recoverable";
    pub const MODIFYING: &str = "modifying";
    pub const REBOOTING: &str = "rebooting";
    pub const STARTING: &str = "starting";
    pub const STOPPED: &str = "stopped";
    pub const STOPPING: &str = "stopping";
}

/// A grant the service holds on another account's KMS key while a copy of that
/// account's shared snapshot runs, so that the copy can resume after a restart of kura
/// without its caller. Retired when the copy ends, however it ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeldGrant {
    pub key_arn: String,
    pub grant_id: String,
}

/// Where a database's files live and, when encrypted, what protects them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct StorageRecord {
    pub encrypted: bool,
    /// The key ARN (AWS reports the ARN even when an alias was given).
    pub kms_key_arn: Option<String>,
    /// Base64 KMS ciphertext of the volume key (GenerateDataKeyWithoutPlaintext).
    pub wrapped_key: Option<String>,
    /// The encryption context the volume key is bound to: `{"aws:rds:db-id": <resource id>}`.
    #[serde(default)]
    pub encryption_context: BTreeMap<String, String>,
    /// The grant the service uses the key through.
    pub grant_id: Option<String>,
    /// The engine's loopback port.
    pub port: u16,
    /// Set once the engine's data directory has been created.
    #[serde(default)]
    pub provisioned: bool,
    /// When the database lost access to its key (for the terminal timeout).
    pub locked_since: Option<Timestamp>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ClusterRecord {
    pub account: String,
    pub region: String,
    pub id: String,
    /// `cluster-` + 26 characters: what the encryption context names.
    pub resource_id: String,
    pub engine: String,
    pub engine_version: String,
    pub master_username: String,
    pub database_name: Option<String>,
    pub status: String,
    pub storage: StorageRecord,
    pub created: Timestamp,
    pub backup_retention: i64,
    /// `PreferredBackupWindow`, checked by [`crate::window::BackupWindow::parse`].
    #[serde(default = "default_backup_window")]
    pub backup_window: String,
    pub deletion_protection: bool,
    pub copy_tags_to_snapshot: bool,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl ClusterRecord {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:rds:{}:{}:cluster:{}",
            self.region, self.account, self.id
        )
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.account, self.id)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct InstanceRecord {
    pub account: String,
    pub region: String,
    pub id: String,
    /// `db-` + 26 characters (`DbiResourceId`).
    pub resource_id: String,
    /// The Aurora cluster this instance belongs to, if any.
    pub cluster: Option<String>,
    pub instance_class: String,
    pub engine: String,
    pub engine_version: String,
    pub master_username: String,
    pub db_name: Option<String>,
    pub status: String,
    /// Own storage for standalone instances; `None` for cluster members (the cluster's).
    pub storage: Option<StorageRecord>,
    pub allocated_storage: i64,
    pub created: Timestamp,
    /// Backup settings of a standalone instance; an Aurora member shows (and is backed
    /// up with) its cluster's, and keeps here the values it was created with.
    pub backup_retention: i64,
    /// `PreferredBackupWindow`, checked by [`crate::window::BackupWindow::parse`].
    #[serde(default = "default_backup_window")]
    pub backup_window: String,
    pub deletion_protection: bool,
    pub copy_tags_to_snapshot: bool,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

impl InstanceRecord {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:rds:{}:{}:db:{}",
            self.region, self.account, self.id
        )
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.account, self.id)
    }
}

/// The two snapshot families. They behave alike; they differ in names on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// A DB snapshot, of a standalone instance.
    Instance,
    /// A DB cluster snapshot, of an Aurora cluster.
    Cluster,
}

impl SnapshotKind {
    /// The resource kind in the snapshot's ARN.
    pub fn arn_kind(self) -> &'static str {
        match self {
            Self::Instance => "snapshot",
            Self::Cluster => "cluster-snapshot",
        }
    }

    /// The name of the identifier parameter and element (`DBSnapshotIdentifier`, ...).
    pub fn identifier_name(self) -> &'static str {
        match self {
            Self::Instance => "DBSnapshotIdentifier",
            Self::Cluster => "DBClusterSnapshotIdentifier",
        }
    }

    /// `DBSnapshot` / `DBClusterSnapshot`: the element a snapshot is rendered as.
    pub fn element(self) -> &'static str {
        match self {
            Self::Instance => "DBSnapshot",
            Self::Cluster => "DBClusterSnapshot",
        }
    }

    pub fn cloudtrail_type(self) -> &'static str {
        match self {
            Self::Instance => "AWS::RDS::DBSnapshot",
            Self::Cluster => "AWS::RDS::DBClusterSnapshot",
        }
    }
}

/// Snapshot types as AWS names them.
pub(crate) const MANUAL: &str = "manual";

/// A DB snapshot or DB cluster snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub account: String,
    pub region: String,
    pub id: String,
    pub kind: SnapshotKind,
    /// `manual` or `automated`.
    pub snapshot_type: String,
    /// Names the snapshot's manifest in the chunk store (`snap-` + 26 characters).
    pub data_id: String,
    /// The instance or cluster it was taken of, and that database's resource id.
    pub source_db: String,
    pub source_resource_id: String,
    pub source_created: Timestamp,
    pub engine: String,
    pub engine_version: String,
    pub master_username: String,
    pub database_name: Option<String>,
    pub allocated_storage: i64,
    pub status: String,
    pub percent_progress: u8,
    pub created: Timestamp,
    /// Encryption exactly as for a database: the key, the wrapped volume key, its
    /// context, and the service's grant for this snapshot. `port` is the source's.
    pub storage: StorageRecord,
    /// For copies: the ARN of the snapshot copied.
    pub source_snapshot_arn: Option<String>,
    /// Accounts allowed to copy and restore it (`all`: public).
    #[serde(default)]
    pub shared_with: Vec<String>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// For a copy of another account's encrypted snapshot, while it runs: the service's
    /// grant on the source's key.
    #[serde(default)]
    pub source_grant: Option<HeldGrant>,
}

impl SnapshotRecord {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:rds:{}:{}:{}:{}",
            self.region,
            self.account,
            self.kind.arn_kind(),
            self.id
        )
    }

    pub fn key(&self) -> String {
        snapshot_key(&self.account, self.kind, &self.id)
    }

    /// Whether `account` may see, copy and restore it.
    pub fn visible_to(&self, account: &str) -> bool {
        self.account == account || self.shared_with.iter().any(|a| a == account || a == "all")
    }
}

pub(crate) fn snapshot_key(account: &str, kind: SnapshotKind, id: &str) -> String {
    format!("{account}/{}/{id}", kind.arn_kind())
}

/// A DescribeEvents entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct EventRecord {
    pub account: String,
    pub source_identifier: String,
    /// `db-instance` or `db-cluster`.
    pub source_type: String,
    pub source_arn: String,
    pub message: String,
    pub categories: Vec<String>,
    pub date: Timestamp,
}

/// A resource id in AWS's form: a prefix and 26 upper-case letters and digits.
pub(crate) fn new_resource_id(prefix: &str) -> RdsResult<String> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut random = [0u8; 26];
    kura_crypto::fill_random(&mut random).map_err(|e| RdsError::Internal(e.to_string()))?;
    let suffix: String = random
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect();
    Ok(format!("{prefix}{suffix}"))
}

/// AWS identifier rules for clusters, instances and snapshots: 1-63 letters, digits or
/// hyphens; first a letter; no trailing hyphen or two consecutive hyphens. Stored
/// lowercase, as AWS does.
pub(crate) fn check_identifier(parameter: &str, value: &str) -> RdsResult<String> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_alphabetic())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !value.ends_with('-')
        && !value.contains("--");
    if valid {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(RdsError::InvalidParameterValue(format!(
            "The parameter {parameter} is not a valid identifier. Identifiers must begin with a letter; must contain only ASCII letters, digits, and hyphens; and must not end with a hyphen or contain two consecutive hyphens."
        )))
    }
}

fn default_backup_window() -> String {
    crate::window::DEFAULT_BACKUP_WINDOW.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_aws_rules() {
        assert_eq!(
            check_identifier("DBClusterIdentifier", "My-Cluster1").ok(),
            Some("my-cluster1".into())
        );
        for bad in ["", "1abc", "a--b", "abc-", "a_b", &"a".repeat(64)] {
            assert!(
                check_identifier("DBClusterIdentifier", bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn engines_map_to_the_software_that_runs_them() {
        assert_eq!(
            Engine::parse("aurora-postgresql").map(Engine::family).ok(),
            Some(EngineFamily::Postgres)
        );
        assert_eq!(
            Engine::parse("mysql").map(Engine::family).ok(),
            Some(EngineFamily::MariaDb)
        );
        assert!(Engine::parse("oracle-ee").is_err());
        let id = new_resource_id("db-").unwrap_or_default();
        assert_eq!(id.len(), 29);
    }
}
