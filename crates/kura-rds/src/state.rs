//! The service's records in memory, written through to the store: every change is
//! committed before it becomes visible.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use kura_store::Store;

use crate::error::{RdsError, RdsResult};
use crate::model::{
    CLUSTERS, ClusterRecord, EVENTS, EventRecord, INSTANCES, InstanceRecord, SNAPSHOTS,
    SnapshotKind, SnapshotRecord, snapshot_key,
};

/// Events kept per account for DescribeEvents (AWS keeps 14 days; kura keeps the newest).
const EVENTS_KEPT: usize = 1000;

#[derive(Default)]
struct Inner {
    clusters: BTreeMap<String, ClusterRecord>,
    instances: BTreeMap<String, InstanceRecord>,
    snapshots: BTreeMap<String, SnapshotRecord>,
}

pub(crate) struct State {
    store: Arc<Store>,
    inner: RwLock<Inner>,
    writer: Mutex<()>,
}

fn key(account: &str, id: &str) -> String {
    format!("{account}/{id}")
}

impl State {
    pub fn load(store: Arc<Store>) -> RdsResult<Self> {
        let (clusters, instances, snapshots) = store.read(|r| {
            Ok::<_, RdsError>((
                r.scan_all::<ClusterRecord>(CLUSTERS, "")?,
                r.scan_all::<InstanceRecord>(INSTANCES, "")?,
                r.scan_all::<SnapshotRecord>(SNAPSHOTS, "")?,
            ))
        })?;
        Ok(Self {
            store,
            inner: RwLock::new(Inner {
                clusters: clusters.into_iter().collect(),
                instances: instances.into_iter().collect(),
                snapshots: snapshots.into_iter().collect(),
            }),
            writer: Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn cluster(&self, account: &str, id: &str) -> Option<ClusterRecord> {
        self.read().clusters.get(&key(account, id)).cloned()
    }

    pub fn instance(&self, account: &str, id: &str) -> Option<InstanceRecord> {
        self.read().instances.get(&key(account, id)).cloned()
    }

    pub fn clusters_of(&self, account: &str) -> Vec<ClusterRecord> {
        self.read()
            .clusters
            .values()
            .filter(|c| c.account == account)
            .cloned()
            .collect()
    }

    pub fn instances_of(&self, account: &str) -> Vec<InstanceRecord> {
        self.read()
            .instances
            .values()
            .filter(|i| i.account == account)
            .cloned()
            .collect()
    }

    /// The instances of a cluster, oldest (the writer) first.
    pub fn members_of(&self, account: &str, cluster: &str) -> Vec<InstanceRecord> {
        let mut members: Vec<InstanceRecord> = self
            .read()
            .instances
            .values()
            .filter(|i| i.account == account && i.cluster.as_deref() == Some(cluster))
            .cloned()
            .collect();
        members.sort_by_key(|i| i.created);
        members
    }

    pub fn all_clusters(&self) -> Vec<ClusterRecord> {
        self.read().clusters.values().cloned().collect()
    }

    pub fn all_instances(&self) -> Vec<InstanceRecord> {
        self.read().instances.values().cloned().collect()
    }

    /// Ports already given to databases.
    pub fn used_ports(&self) -> BTreeSet<u16> {
        let inner = self.read();
        inner
            .clusters
            .values()
            .map(|c| c.storage.port)
            .chain(
                inner
                    .instances
                    .values()
                    .filter_map(|i| i.storage.as_ref().map(|s| s.port)),
            )
            .collect()
    }

    /// Inserts a new cluster; fails if the id is taken.
    pub fn insert_cluster(&self, record: ClusterRecord) -> RdsResult<()> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if self.read().clusters.contains_key(&record.key()) {
            return Err(RdsError::ClusterAlreadyExists(record.id));
        }
        self.persist_cluster(record)
    }

    /// Inserts a new instance; fails if the id is taken.
    pub fn insert_instance(&self, record: InstanceRecord) -> RdsResult<()> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if self.read().instances.contains_key(&record.key()) {
            return Err(RdsError::InstanceAlreadyExists(record.id));
        }
        self.persist_instance(record)
    }

    fn persist_cluster(&self, record: ClusterRecord) -> RdsResult<()> {
        self.store.write(|w| {
            w.put(CLUSTERS, &record.key(), &record)
                .map_err(RdsError::from)
        })?;
        self.write().clusters.insert(record.key(), record);
        Ok(())
    }

    fn persist_instance(&self, record: InstanceRecord) -> RdsResult<()> {
        self.store.write(|w| {
            w.put(INSTANCES, &record.key(), &record)
                .map_err(RdsError::from)
        })?;
        self.write().instances.insert(record.key(), record);
        Ok(())
    }

    /// Applies `change` to a cluster and persists it; returns the new record.
    pub fn update_cluster(
        &self,
        account: &str,
        id: &str,
        change: impl FnOnce(&mut ClusterRecord) -> RdsResult<()>,
    ) -> RdsResult<ClusterRecord> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self
            .cluster(account, id)
            .ok_or_else(|| RdsError::ClusterNotFound(id.to_owned()))?;
        change(&mut record)?;
        self.persist_cluster(record.clone())?;
        Ok(record)
    }

    /// Applies `change` to an instance and persists it; returns the new record.
    pub fn update_instance(
        &self,
        account: &str,
        id: &str,
        change: impl FnOnce(&mut InstanceRecord) -> RdsResult<()>,
    ) -> RdsResult<InstanceRecord> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self
            .instance(account, id)
            .ok_or_else(|| RdsError::InstanceNotFound(id.to_owned()))?;
        change(&mut record)?;
        self.persist_instance(record.clone())?;
        Ok(record)
    }

    pub fn remove_cluster(&self, account: &str, id: &str) -> RdsResult<()> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(account, id);
        self.store
            .write(|w| w.delete(CLUSTERS, &k).map_err(RdsError::from))?;
        self.write().clusters.remove(&k);
        Ok(())
    }

    pub fn remove_instance(&self, account: &str, id: &str) -> RdsResult<()> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(account, id);
        self.store
            .write(|w| w.delete(INSTANCES, &k).map_err(RdsError::from))?;
        self.write().instances.remove(&k);
        Ok(())
    }

    pub fn snapshot(&self, account: &str, kind: SnapshotKind, id: &str) -> Option<SnapshotRecord> {
        self.read()
            .snapshots
            .get(&snapshot_key(account, kind, id))
            .cloned()
    }

    /// Snapshots of one family that `account` owns or that are shared with it.
    pub fn snapshots_visible_to(&self, account: &str, kind: SnapshotKind) -> Vec<SnapshotRecord> {
        self.read()
            .snapshots
            .values()
            .filter(|s| s.kind == kind && s.visible_to(account))
            .cloned()
            .collect()
    }

    /// Every snapshot (for recovery after a restart).
    pub fn all_snapshots(&self) -> Vec<SnapshotRecord> {
        self.read().snapshots.values().cloned().collect()
    }

    /// Inserts a new snapshot; fails if the id is taken in its family.
    pub fn insert_snapshot(&self, record: SnapshotRecord) -> RdsResult<()> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if self.read().snapshots.contains_key(&record.key()) {
            return Err(RdsError::SnapshotAlreadyExists(record.kind, record.id));
        }
        self.persist_snapshot(record)
    }

    fn persist_snapshot(&self, record: SnapshotRecord) -> RdsResult<()> {
        self.store.write(|w| {
            w.put(SNAPSHOTS, &record.key(), &record)
                .map_err(RdsError::from)
        })?;
        self.write().snapshots.insert(record.key(), record);
        Ok(())
    }

    /// Applies `change` to a snapshot and persists it; returns the new record.
    pub fn update_snapshot(
        &self,
        account: &str,
        kind: SnapshotKind,
        id: &str,
        change: impl FnOnce(&mut SnapshotRecord) -> RdsResult<()>,
    ) -> RdsResult<SnapshotRecord> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut record = self
            .snapshot(account, kind, id)
            .ok_or_else(|| RdsError::SnapshotNotFound(kind, id.to_owned()))?;
        change(&mut record)?;
        self.persist_snapshot(record.clone())?;
        Ok(record)
    }

    pub fn remove_snapshot(&self, account: &str, kind: SnapshotKind, id: &str) -> RdsResult<()> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let k = snapshot_key(account, kind, id);
        self.store
            .write(|w| w.delete(SNAPSHOTS, &k).map_err(RdsError::from))?;
        self.write().snapshots.remove(&k);
        Ok(())
    }

    pub fn add_event(&self, event: EventRecord) -> RdsResult<()> {
        let k = format!(
            "{}/{:020}/{}",
            event.account,
            event.date.millis(),
            uuid::Uuid::new_v4()
        );
        let prefix = format!("{}/", event.account);
        self.store.write(|w| {
            w.put(EVENTS, &k, &event)?;
            let existing: Vec<(String, EventRecord)> = w.scan_all(EVENTS, &prefix)?;
            for (old, _) in existing
                .iter()
                .take(existing.len().saturating_sub(EVENTS_KEPT))
            {
                w.delete(EVENTS, old)?;
            }
            Ok::<_, RdsError>(())
        })
    }

    pub fn events_of(&self, account: &str) -> RdsResult<Vec<EventRecord>> {
        let prefix = format!("{account}/");
        let events: Vec<(String, EventRecord)> = self
            .store
            .read(|r| r.scan_all(EVENTS, &prefix).map_err(RdsError::from))?;
        Ok(events.into_iter().map(|(_, e)| e).collect())
    }
}
