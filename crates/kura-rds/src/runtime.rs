//! The data plane of each database: its storage and its engine process.
//!
//! A *unit* is what has storage and an engine: an Aurora cluster (its instances are
//! served by the cluster's engine) or a standalone instance. Operations on one unit are
//! serialized by the unit's own lock; different units never wait for each other.
//!
//! ```text
//! <data-dir>/rds/<resource-id>/storage   the volume's backing files (ciphertext) or plain files
//!                              /mnt       where an encrypted volume is mounted
//!                              /run       engine sockets, pid and log files (never on the volume)
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kura_crypto::SecretBytes;
use kura_engine::{EngineConfig, EngineProcess, PausedEngine, StopMode, TlsMaterial};

use crate::error::{RdsError, RdsResult};
use crate::model::Engine;
use crate::storage::{OpenStorage, PlainStorage, StorageKind, VolumeKeyInfo};

/// How long an engine may take to accept connections (crash recovery included).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const CLEAN_STOP_GRACE: Duration = Duration::from_secs(60);
const IMMEDIATE_STOP_GRACE: Duration = Duration::from_secs(5);

/// What the runtime needs to know about a unit.
#[derive(Clone, Debug)]
pub(crate) struct UnitSpec {
    pub resource_id: String,
    pub engine: Engine,
    pub port: u16,
    pub master_username: String,
    pub initial_database: Option<String>,
    pub encrypted: bool,
}

#[derive(Default)]
pub(crate) struct Unit {
    storage: Option<Box<dyn OpenStorage>>,
    engine: Option<EngineProcess>,
    locked: bool,
}

pub(crate) struct Runtime {
    base: PathBuf,
    plain: PlainStorage,
    encrypted: Arc<dyn StorageKind>,
    units: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Unit>>>>,
}

impl Runtime {
    pub fn new(base: PathBuf, encrypted: Arc<dyn StorageKind>) -> Self {
        Self {
            base,
            plain: PlainStorage,
            encrypted,
            units: Mutex::new(HashMap::new()),
        }
    }

    fn unit(&self, resource_id: &str) -> Arc<tokio::sync::Mutex<Unit>> {
        let mut units = self.units.lock().unwrap_or_else(|p| p.into_inner());
        units.entry(resource_id.to_owned()).or_default().clone()
    }

    fn dir(&self, resource_id: &str) -> PathBuf {
        self.base.join(resource_id)
    }

    fn kind(&self, spec: &UnitSpec) -> &dyn StorageKind {
        if spec.encrypted {
            self.encrypted.as_ref()
        } else {
            &self.plain
        }
    }

    fn engine_config(
        &self,
        spec: &UnitSpec,
        root: &std::path::Path,
        password: SecretBytes,
        tls: Option<TlsMaterial>,
    ) -> EngineConfig {
        EngineConfig {
            family: spec.engine.family(),
            data_dir: root.join("data"),
            run_dir: self.dir(&spec.resource_id).join("run"),
            port: spec.port,
            master_username: spec.master_username.clone(),
            master_password: password,
            initial_database: spec.initial_database.clone(),
            tls,
        }
    }

    /// Creates the unit's storage and engine data directory, and leaves the engine
    /// running if `start` (a standalone instance) or stopped (an Aurora cluster without
    /// instances yet).
    pub async fn provision(
        &self,
        spec: &UnitSpec,
        master_password: SecretBytes,
        volume: Option<(SecretBytes, VolumeKeyInfo)>,
        start: bool,
    ) -> RdsResult<()> {
        let unit = self.unit(&spec.resource_id);
        let mut unit = unit.lock().await;
        let dir = self.dir(&spec.resource_id);
        // A provisioning interrupted by a crash starts over from nothing.
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| RdsError::Internal(format!("clearing {}: {e}", dir.display())))?;
        }
        std::fs::create_dir_all(dir.join("storage"))
            .map_err(|e| RdsError::Internal(format!("creating {}: {e}", dir.display())))?;
        crate::storage::open_to_engine_users(&dir)?;
        let kind = self.kind(spec);
        let (key, info) = match volume {
            Some((key, info)) => (Some(key), Some(info)),
            None => (None, None),
        };
        kind.create(&dir.join("storage"), info.as_ref()).await?;
        let storage = kind.open(&dir.join("storage"), key).await?;
        let certificate =
            kura_edge::tls::generate_certificate(&spec.resource_id.to_ascii_lowercase(), &[])
                .map_err(|e| RdsError::Internal(e.to_string()))?;
        let tls = TlsMaterial {
            cert_pem: certificate.chain_pem,
            key_pem: certificate.key_pem,
        };
        let config = self.engine_config(spec, storage.root(), master_password, Some(tls));
        kura_engine::initialize(&config)
            .await
            .map_err(|e| RdsError::Internal(format!("initializing the engine: {e}")))?;
        unit.storage = Some(storage);
        if start {
            unit.engine = Some(start_engine(&config).await?);
        } else {
            close_storage(&mut unit).await?;
        }
        Ok(())
    }

    /// Opens the unit's storage (with `key` if encrypted) and starts its engine.
    pub async fn start(&self, spec: &UnitSpec, key: Option<SecretBytes>) -> RdsResult<()> {
        let unit = self.unit(&spec.resource_id);
        let mut unit = unit.lock().await;
        if unit.engine.as_mut().is_some_and(EngineProcess::is_running) {
            return Ok(());
        }
        match (&unit.storage, key) {
            (Some(storage), Some(key)) if unit.locked => storage.unlock(key)?,
            (Some(_), _) => {}
            (None, key) => {
                unit.storage = Some(
                    self.kind(spec)
                        .open(&self.dir(&spec.resource_id).join("storage"), key)
                        .await?,
                )
            }
        }
        unit.locked = false;
        let root = unit
            .storage
            .as_ref()
            .map(|s| s.root().to_owned())
            .ok_or_else(|| RdsError::Internal("storage vanished".into()))?;
        let config = self.engine_config(spec, &root, SecretBytes::zeroed(0), None);
        unit.engine = Some(start_engine(&config).await?);
        Ok(())
    }

    /// Changes the master password on the unit's running engine.
    pub async fn set_master_password(
        &self,
        spec: &UnitSpec,
        password: SecretBytes,
    ) -> RdsResult<()> {
        let unit = self.unit(&spec.resource_id);
        let mut unit = unit.lock().await;
        let running = unit.engine.as_mut().is_some_and(EngineProcess::is_running);
        let root = unit.storage.as_ref().map(|s| s.root().to_owned());
        let (true, Some(root)) = (running, root) else {
            return Err(RdsError::Internal(
                "the database's engine is not running".into(),
            ));
        };
        let config = self.engine_config(spec, &root, password, None);
        kura_engine::set_master_password(&config)
            .await
            .map_err(|e| RdsError::Internal(format!("changing the master password: {e}")))
    }

    /// Stops the engine cleanly and closes the storage (the volume key is forgotten).
    pub async fn stop(&self, resource_id: &str) -> RdsResult<()> {
        let unit = self.unit(resource_id);
        let mut unit = unit.lock().await;
        if let Some(engine) = unit.engine.take() {
            let mode = if unit.locked {
                StopMode::Immediate
            } else {
                StopMode::Clean
            };
            engine
                .stop(mode, CLEAN_STOP_GRACE)
                .await
                .map_err(|e| RdsError::Internal(format!("stopping the engine: {e}")))?;
        }
        close_storage(&mut unit).await
    }

    /// The key became unusable: cut access to the storage at once, then end the engine
    /// (its sessions end with errors; new connections are refused).
    pub async fn lock(&self, resource_id: &str) -> RdsResult<()> {
        let unit = self.unit(resource_id);
        let mut unit = unit.lock().await;
        if let Some(storage) = &unit.storage {
            storage.lock();
        }
        unit.locked = true;
        if let Some(engine) = unit.engine.take() {
            engine
                .stop(StopMode::Immediate, IMMEDIATE_STOP_GRACE)
                .await
                .map_err(|e| RdsError::Internal(format!("stopping the engine: {e}")))?;
        }
        Ok(())
    }

    /// Stops everything and removes the unit's files.
    pub async fn destroy(&self, resource_id: &str) -> RdsResult<()> {
        self.stop(resource_id).await?;
        let dir = self.dir(resource_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| RdsError::Internal(format!("removing {}: {e}", dir.display())))?;
        }
        self.units
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(resource_id);
        Ok(())
    }

    /// Holds the unit's writes so that its image directory is crash-consistent until
    /// [`Frozen::thaw`]: the volume's gate for encrypted storage, a paused engine for
    /// plain files. A unit with nothing running needs no hold.
    pub async fn freeze(&self, resource_id: &str) -> RdsResult<Frozen> {
        let unit = self.unit(resource_id).lock_owned().await;
        if let Some(guard) = match &unit.storage {
            Some(storage) => storage.freeze().await?,
            None => None,
        } {
            return Ok(Frozen::Volume(guard));
        }
        let paused = match &unit.engine {
            Some(engine) => engine
                .pause()
                .await
                .map_err(|e| RdsError::Internal(format!("pausing the engine: {e}")))?,
            None => return Ok(Frozen::Idle),
        };
        // The unit stays locked while its engine is paused: a stop or restart waits for
        // the copy instead of signalling a stopped process. (Plain storage has no key, so
        // no key-driven lock ever needs to get past this.)
        Ok(Frozen::Engine(paused, unit))
    }

    /// The directory a unit's image lives in (see [`crate::storage::image_dir`]).
    pub fn image_dir(&self, resource_id: &str, encrypted: bool) -> PathBuf {
        crate::storage::image_dir(&self.dir(resource_id).join("storage"), encrypted)
    }

    /// Makes a fresh, empty unit directory for a database restored from a snapshot and
    /// returns the image directory to write the snapshot's files into.
    pub fn prepare_restore(&self, resource_id: &str, encrypted: bool) -> RdsResult<PathBuf> {
        let dir = self.dir(resource_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| RdsError::Internal(format!("clearing {}: {e}", dir.display())))?;
        }
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)
            .map_err(|e| RdsError::Internal(format!("creating {}: {e}", dir.display())))?;
        crate::storage::open_to_engine_users(&dir)?;
        crate::storage::open_to_engine_users(&storage)?;
        if encrypted {
            crate::storage::create_mount_point(&storage)?;
        }
        Ok(self.image_dir(resource_id, encrypted))
    }

    /// Records the restored volume's own wrapped key (its new owner's context).
    pub fn finish_restore(&self, resource_id: &str, key: &VolumeKeyInfo) -> RdsResult<()> {
        crate::storage::rewrap_volume(&self.dir(resource_id).join("storage"), key)
    }

    /// Whether the unit's engine process is running.
    pub async fn is_running(&self, resource_id: &str) -> bool {
        let unit = self.unit(resource_id);
        let mut unit = unit.lock().await;
        unit.engine.as_mut().is_some_and(EngineProcess::is_running)
    }

    /// Stops every engine cleanly (server shutdown).
    pub async fn shutdown(&self) {
        let ids: Vec<String> = self
            .units
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in ids {
            if let Err(error) = self.stop(&id).await {
                tracing::warn!(unit = %id, %error, "could not stop a database cleanly");
            }
        }
    }
}

/// A unit's writes held for a copy; see [`Runtime::freeze`].
pub(crate) enum Frozen {
    Volume(#[allow(dead_code)] Box<dyn Send>),
    Engine(PausedEngine, tokio::sync::OwnedMutexGuard<Unit>),
    Idle,
}

impl Frozen {
    pub async fn thaw(self) {
        match self {
            Frozen::Volume(guard) => drop(guard),
            Frozen::Engine(paused, _unit) => paused.resume().await,
            Frozen::Idle => {}
        }
    }
}

async fn start_engine(config: &EngineConfig) -> RdsResult<EngineProcess> {
    kura_engine::start(config, READY_TIMEOUT)
        .await
        .map_err(|e| RdsError::Internal(format!("starting the engine: {e}")))
}

async fn close_storage(unit: &mut Unit) -> RdsResult<()> {
    if let Some(storage) = unit.storage.take() {
        storage.close().await?;
    }
    unit.locked = false;
    Ok(())
}
