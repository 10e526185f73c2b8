//! Database engine processes: real PostgreSQL 15 and MariaDB from Debian, each on its own
//! data directory and loopback port.
//!
//! Owns: creating an engine's data directory (`initdb`, `mariadb-install-db`), the
//! master user and password, TLS and listen settings, starting the server as its own
//! system user (`postgres`, `mysql`), waiting until it accepts connections, and stopping
//! it — politely (a clean shutdown) or at once (the key behind its volume is gone).
//!
//! Must not: know about accounts, KMS keys or volumes. The caller decides where the data
//! directory lives (on an encrypted volume) and hands over the TLS certificate; this
//! crate only runs engines.

mod mariadb;
mod postgres;
mod process;
mod system;

use std::path::PathBuf;
use std::time::Duration;

use kura_crypto::SecretBytes;

pub use process::{EngineProcess, PausedEngine, StopMode, is_ready};

/// Which engine software runs a database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineFamily {
    /// PostgreSQL 15 (`postgres`, `aurora-postgresql`).
    Postgres,
    /// MariaDB (`mysql`, `mariadb`, `aurora-mysql`).
    MariaDb,
}

impl EngineFamily {
    /// The system user the engine runs as.
    pub fn system_user(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::MariaDb => "mysql",
        }
    }
}

/// A PEM certificate chain and private key the engine serves TLS with.
pub struct TlsMaterial {
    pub cert_pem: String,
    pub key_pem: SecretBytes,
}

/// Everything needed to initialize or start one engine.
pub struct EngineConfig {
    pub family: EngineFamily,
    /// The engine's files; typically on an encrypted volume.
    pub data_dir: PathBuf,
    /// Sockets, pid files and logs: never on the volume (a locked volume must not take
    /// the log of why it locked with it).
    pub run_dir: PathBuf,
    pub port: u16,
    pub master_username: String,
    pub master_password: SecretBytes,
    /// A database to create at initialization (`DBName` / `DatabaseName`).
    pub initial_database: Option<String>,
    pub tls: Option<TlsMaterial>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{program} is not installed (looked for {path}); install it with scripts/deps.sh")]
    NotInstalled {
        program: &'static str,
        path: PathBuf,
    },
    #[error("system user {0} does not exist; install the engine's Debian package")]
    NoSuchUser(String),
    #[error("{action} failed: {source}")]
    Io {
        action: String,
        source: std::io::Error,
    },
    #[error("{command} failed with {status}: {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("the engine did not accept connections within {0:?}; see its log in the run directory")]
    NotReady(Duration),
    #[error("the engine exited: {0}")]
    Exited(String),
}

pub(crate) fn io_error(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let action = action.into();
    move |source| EngineError::Io { action, source }
}

/// Creates a new engine data directory with the master user, TLS and listen settings.
/// The directory must be empty or absent.
pub async fn initialize(config: &EngineConfig) -> Result<(), EngineError> {
    match config.family {
        EngineFamily::Postgres => postgres::initialize(config).await,
        EngineFamily::MariaDb => mariadb::initialize(config).await,
    }
}

/// Starts the engine on an initialized data directory and waits until it accepts
/// connections (or `ready_timeout` passes). Crash recovery, if the engine needs it, runs
/// within that time.
pub async fn start(
    config: &EngineConfig,
    ready_timeout: Duration,
) -> Result<EngineProcess, EngineError> {
    match config.family {
        EngineFamily::Postgres => postgres::start(config, ready_timeout).await,
        EngineFamily::MariaDb => mariadb::start(config, ready_timeout).await,
    }
}

/// Changes the master user's password on the running engine to `config.master_password`
/// (ModifyDBInstance / ModifyDBCluster with `MasterUserPassword`). Sessions stay open.
pub async fn set_master_password(config: &EngineConfig) -> Result<(), EngineError> {
    match config.family {
        EngineFamily::Postgres => postgres::set_master_password(config).await,
        EngineFamily::MariaDb => mariadb::set_master_password(config).await,
    }
}

/// Whether something accepts TCP connections on the loopback `port`.
pub async fn accepts_connections(port: u16) -> bool {
    tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}
