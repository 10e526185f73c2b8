//! Automated backups: one automated snapshot per backup day of every database whose
//! backup retention period is above zero, taken when its daily backup window opens
//! (`PreferredBackupWindow`, see `window.rs`; the first one at once), kept for that many
//! days, and removed with their database (as AWS does when DeleteAutomatedBackups is left
//! at its default).
//!
//! Automated snapshots are named `rds:<database>-YYYY-MM-DD-HH-MM`, have
//! `SnapshotType=automated`, cannot be shared or deleted by hand, and become manual
//! when copied. The length of a "day" is a setting so that tests can shorten it.

use std::sync::Arc;

use kura_types::Timestamp;

use crate::Rds;
use crate::error::{RdsError, RdsResult};
use crate::lifecycle::Unit;
use crate::model::{SnapshotKind, SnapshotRecord, status};
use crate::ops::snapshots::{SourceDatabase, snapshot_record};
use crate::params::Params;
use crate::window::BackupWindow;

pub(crate) const AUTOMATED: &str = "automated";

/// A database's backup settings, as the scheduler uses them.
struct BackupPlan {
    retention: i64,
    window: BackupWindow,
}

impl BackupPlan {
    fn new(retention: i64, window: &str) -> Self {
        Self {
            retention,
            window: BackupWindow::stored(window),
        }
    }
}

/// The request's `BackupRetentionPeriod`, checked (0-35 days; Aurora clusters keep at
/// least one); `None` if it names none.
pub(crate) fn requested_retention(p: &Params<'_>, aurora: bool) -> RdsResult<Option<i64>> {
    let least = i64::from(aurora);
    match p.int("BackupRetentionPeriod")? {
        Some(days) if !(least..=35).contains(&days) => Err(RdsError::InvalidParameterValue(
            format!("The backup retention period must be between {least} and 35 days: {days}."),
        )),
        days => Ok(days),
    }
}

/// The backup retention period and window of a new database: the request's, checked,
/// or the defaults (1 day, [`crate::window::DEFAULT_BACKUP_WINDOW`]).
pub(crate) fn requested_settings(p: &Params<'_>, aurora: bool) -> RdsResult<(i64, String)> {
    Ok((
        requested_retention(p, aurora)?.unwrap_or(1),
        crate::window::requested(p)?
            .unwrap_or_else(|| crate::window::DEFAULT_BACKUP_WINDOW.to_owned()),
    ))
}

impl Rds {
    /// Runs forever: takes automated snapshots when due and prunes expired ones.
    pub(crate) async fn run_automated_backups(self: Arc<Self>) {
        // Fine enough to start a backup close to its window's opening in a shortened
        // test day, at most a minute late in a real one.
        let tick = (self.settings.backup_day / 100).clamp(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(60),
        );
        let mut ticker = tokio::time::interval(tick);
        loop {
            ticker.tick().await;
            self.prune_automated_snapshots();
            for unit in self.all_units() {
                if let Some((kind, source, plan)) = self.backup_source(&unit)
                    && plan.retention > 0
                    && self.automated_backup_due(&source, &plan.window)
                {
                    self.take_automated_snapshot(kind, source);
                }
            }
        }
    }

    /// What an automated snapshot of `unit` would be taken of, if it serves now, and
    /// its backup settings.
    fn backup_source(&self, unit: &Unit) -> Option<(SnapshotKind, SourceDatabase, BackupPlan)> {
        match unit {
            Unit::Cluster { account, id } => {
                let c = self.state.cluster(account, id)?;
                (c.status == status::AVAILABLE).then(|| {
                    let plan = BackupPlan::new(c.backup_retention, &c.backup_window);
                    (SnapshotKind::Cluster, c.into(), plan)
                })
            }
            Unit::Instance { account, id } => {
                let i = self.state.instance(account, id)?;
                (i.status == status::AVAILABLE).then(|| {
                    let plan = BackupPlan::new(i.backup_retention, &i.backup_window);
                    (SnapshotKind::Instance, i.into(), plan)
                })
            }
        }
    }

    fn day_millis(&self) -> i64 {
        i64::try_from(self.settings.backup_day.as_millis()).unwrap_or(i64::MAX)
    }

    fn automated_of(&self, resource_id: &str) -> Vec<SnapshotRecord> {
        self.state
            .all_snapshots()
            .into_iter()
            .filter(|s| s.snapshot_type == AUTOMATED && s.source_resource_id == resource_id)
            .collect()
    }

    /// The first automated backup is taken at once (when backups are turned on, or the
    /// database is new), as on AWS; then one per day, once its window has opened. A
    /// window missed while kura was stopped is made up for at the next start.
    fn automated_backup_due(&self, source: &SourceDatabase, window: &BackupWindow) -> bool {
        let existing = self.automated_of(source.resource_id());
        let opened = window.last_opened(self.clock.now().millis(), self.day_millis());
        existing.iter().all(|s| s.created.millis() < opened)
    }

    /// Records the snapshot now (so the next tick sees it) and captures it in its own
    /// task: a slow capture must not make this loop late for other databases' windows.
    fn take_automated_snapshot(self: &Arc<Self>, kind: SnapshotKind, source: SourceDatabase) {
        let now = self.clock.now();
        let record = match snapshot_record(kind, &source, AUTOMATED, now) {
            Ok(record) => SnapshotRecord {
                id: self.automated_name(source.id(), now),
                ..record
            },
            Err(error) => {
                tracing::warn!(%error, "could not prepare an automated snapshot");
                return;
            }
        };
        if self.state.insert_snapshot(record.clone()).is_ok() {
            tokio::spawn(self.clone().capture(record));
        }
    }

    /// `rds:<database>-YYYY-MM-DD-HH-MM`, with seconds when a backup day is shorter
    /// than a minute (tests), so that names stay unique.
    fn automated_name(&self, database: &str, now: Timestamp) -> String {
        let iso = now.iso8601_millis();
        let minutes = iso.get(..16).unwrap_or_default().replace(['T', ':'], "-");
        if self.settings.backup_day.as_secs() < 60 {
            let seconds = iso.get(17..19).unwrap_or_default();
            format!("rds:{database}-{minutes}-{seconds}")
        } else {
            format!("rds:{database}-{minutes}")
        }
    }

    /// Removes automated snapshots past their retention, and those of deleted databases.
    fn prune_automated_snapshots(self: &Arc<Self>) {
        let now = self.clock.now();
        for snapshot in self.state.all_snapshots() {
            if snapshot.snapshot_type != AUTOMATED || snapshot.status == status::CREATING {
                continue;
            }
            let retention = self.retention_of(&snapshot);
            let expired = retention.is_none_or(|days| {
                snapshot
                    .created
                    .plus_millis(days.saturating_mul(self.day_millis()))
                    <= now
            });
            if expired
                && self
                    .state
                    .remove_snapshot(&snapshot.account, snapshot.kind, &snapshot.id)
                    .is_ok()
            {
                let rds = self.clone();
                tokio::spawn(async move { rds.discard_snapshot_data(&snapshot).await });
            }
        }
    }

    /// The backup retention period of the snapshot's database; `None` if it is gone.
    fn retention_of(&self, snapshot: &SnapshotRecord) -> Option<i64> {
        match snapshot.kind {
            SnapshotKind::Cluster => self
                .state
                .cluster(&snapshot.account, &snapshot.source_db)
                .filter(|c| c.resource_id == snapshot.source_resource_id)
                .map(|c| c.backup_retention),
            SnapshotKind::Instance => self
                .state
                .instance(&snapshot.account, &snapshot.source_db)
                .filter(|i| i.resource_id == snapshot.source_resource_id)
                .map(|i| i.backup_retention),
        }
    }
}
