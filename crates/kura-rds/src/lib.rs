//! kura's managed database service: an RDS/Aurora-compatible API over real PostgreSQL 15
//! and MariaDB processes whose files live on volumes encrypted under KMS keys.
//!
//! Owns: DB clusters and instances (records, statuses, events, tags), the RDS Query API
//! (`Action=…&Version=2014-10-31`), the data plane of each database (storage + engine, in
//! [`runtime`]), and the link between key state and database state: a database whose key
//! stops being usable is locked within a second, and unlocks by itself when the key works
//! again ([`watch`]).
//!
//! Must not: bypass the KMS. Every use of a key goes through `Kms::invoke` as the caller
//! (via the service) or as the service-linked role under the caller's grant, and is
//! audited like any other call ([`keys`]).

mod backups;
mod chunks;
mod error;
mod keys;
mod lifecycle;
mod model;
mod ops;
mod params;
mod render;
mod runtime;
mod snapshots;
mod state;
mod storage;
mod watch;
mod window;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kura_edge::{ApiError, AuditDetails, AuditSink, QueryParams, QueryService, RequestContext};
use kura_iam::Iam;
use kura_kms::Kms;
use kura_store::Store;
use kura_types::{Clock, Region};

pub use error::{RdsError, RdsResult};

/// Settings of the database service.
#[derive(Clone, Debug)]
pub struct RdsSettings {
    /// Where databases keep their files (`<data-dir>/rds`).
    pub data_dir: PathBuf,
    /// The host name clients use to reach databases (every endpoint).
    pub endpoint_host: String,
    /// Loopback ports handed to databases that do not ask for one.
    pub first_port: u16,
    /// How often key access is re-checked even without a key event.
    pub key_check_interval: Duration,
    /// How long a database may stay `inaccessible-encryption-credentials-recoverable`
    /// before it becomes terminal (AWS: 7 days).
    pub recoverable_period: Duration,
    /// The length of a backup day: automated snapshots are taken once per such day and
    /// kept for `BackupRetentionPeriod` of them (a day; shortened in tests).
    pub backup_day: Duration,
}

/// The database service.
pub struct Rds {
    settings: RdsSettings,
    region: Region,
    clock: Arc<dyn Clock>,
    iam: Arc<Iam>,
    kms: Arc<Kms>,
    keys: keys::KmsAccess,
    state: state::State,
    runtime: runtime::Runtime,
    snapshot_data: snapshots::SnapshotData,
}

impl Rds {
    /// Loads the service's records. Call [`Rds::start`] to bring databases up.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        settings: RdsSettings,
        store: Arc<Store>,
        iam: Arc<Iam>,
        kms: Arc<Kms>,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
        region: Region,
    ) -> RdsResult<Arc<Self>> {
        let state = state::State::load(store)?;
        let runtime =
            runtime::Runtime::new(settings.data_dir.clone(), Arc::new(storage::VolumeStorage));
        let snapshot_data = snapshots::SnapshotData::new(&settings.data_dir);
        Ok(Arc::new(Self {
            keys: keys::KmsAccess::new(kms.clone(), audit, clock.clone(), region.clone()),
            settings,
            region,
            clock,
            iam,
            kms,
            state,
            runtime,
            snapshot_data,
        }))
    }

    /// Brings every database back to the state it was in, and starts watching keys.
    /// Databases that were serving show `starting` from the moment this returns until
    /// their engine accepts connections again.
    pub fn start(self: &Arc<Self>) -> RdsResult<()> {
        let to_restore = self.mark_restarting()?;
        let interrupted = self.interrupted_snapshots();
        self.snapshot_data.clear_scratch();
        let rds = self.clone();
        tokio::spawn(async move {
            rds.recover_after_restart(to_restore).await;
            rds.resume_snapshots(interrupted).await;
            tokio::spawn(rds.clone().run_automated_backups());
            rds.watch_keys().await;
        });
        Ok(())
    }

    /// Stops every engine cleanly (server shutdown).
    pub async fn shutdown(&self) {
        self.runtime.shutdown().await;
    }
}

/// The RDS Query API on the edge.
pub struct RdsApi(pub Arc<Rds>);

#[async_trait]
impl QueryService for RdsApi {
    fn signing_name(&self) -> &'static str {
        "rds"
    }

    fn event_source(&self) -> &'static str {
        "rds.amazonaws.com"
    }

    fn xml_namespace(&self) -> &'static str {
        "http://rds.amazonaws.com/doc/2014-10-31/"
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &QueryParams,
        audit: &mut AuditDetails,
    ) -> Result<String, ApiError> {
        ops::dispatch(&self.0, ctx, action, params, audit)
            .await
            .map_err(ApiError::from)
    }
}
