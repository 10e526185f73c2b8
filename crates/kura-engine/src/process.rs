//! A running engine process: readiness, liveness, and the two ways to stop it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::system::SystemUser;
use crate::{EngineError, EngineFamily, accepts_connections, io_error};

/// How to stop an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// A clean shutdown: sessions are closed, data flushed (PostgreSQL "fast", MariaDB
    /// SIGTERM).
    Clean,
    /// Now: the engine's storage is going away (its key was disabled). PostgreSQL
    /// "immediate" (SIGQUIT, crash recovery at next start), MariaDB SIGKILL.
    Immediate,
}

/// A started engine server.
pub struct EngineProcess {
    family: EngineFamily,
    child: tokio::process::Child,
    pid: u32,
    port: u16,
}

impl EngineProcess {
    /// Spawns `program` as `user` with its output appended to `log`.
    pub(crate) fn spawn(
        family: EngineFamily,
        user: Option<SystemUser>,
        program: &Path,
        args: &[String],
        log: &Path,
        port: u16,
    ) -> Result<Self, EngineError> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_error(format!("opening {}", log.display())))?;
        let log_err = log_file
            .try_clone()
            .map_err(io_error(format!("opening {}", log.display())))?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err));
        if let Some(user) = user {
            command.uid(user.uid).gid(user.gid);
        }
        let child = command
            .spawn()
            .map_err(io_error(format!("starting {}", program.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| EngineError::Exited("the engine exited as it started".into()))?;
        Ok(Self {
            family,
            child,
            pid,
            port,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Suspends the engine and every process it started (SIGSTOP), so that its files
    /// stay as they are — a crash-consistent image for a copy — until
    /// [`PausedEngine::resume`]. Each process stops between system calls, so every write
    /// it has made is complete.
    pub async fn pause(&self) -> Result<PausedEngine, EngineError> {
        // The parent first, so that it starts no new child while its children stop.
        send_signal(self.pid, "STOP").await?;
        let mut pids = vec![self.pid];
        for child in children_of(self.pid) {
            // A child may end between the listing and the signal (a session closing).
            if send_signal(child, "STOP").await.is_ok() {
                pids.push(child);
            }
        }
        Ok(PausedEngine { pids })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits until the engine accepts connections, failing early if it exits.
    pub(crate) async fn wait_ready(&mut self, timeout: Duration) -> Result<(), EngineError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(EngineError::Exited(status.to_string()));
            }
            if is_ready(self.family, self.port).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(EngineError::NotReady(timeout))
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the engine and waits for it to exit; escalates to SIGKILL if a clean stop
    /// takes longer than `grace`.
    pub async fn stop(mut self, mode: StopMode, grace: Duration) -> Result<(), EngineError> {
        if !self.is_running() {
            return Ok(());
        }
        let signal = match (self.family, mode) {
            (EngineFamily::Postgres, StopMode::Clean) => "INT",
            (EngineFamily::Postgres, StopMode::Immediate) => "QUIT",
            (EngineFamily::MariaDb, StopMode::Clean) => "TERM",
            (EngineFamily::MariaDb, StopMode::Immediate) => "KILL",
        };
        send_signal(self.pid, signal).await?;
        if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
            return Ok(());
        }
        tracing::warn!(
            pid = self.pid,
            "engine did not stop in {grace:?}; killing it"
        );
        self.child
            .kill()
            .await
            .map_err(io_error(format!("killing engine {}", self.pid)))
    }
}

/// Whether the engine serves queries (not merely accepts TCP connections: PostgreSQL
/// accepts them while crash recovery still runs, and refuses logins until it is done).
pub async fn is_ready(family: EngineFamily, port: u16) -> bool {
    if !accepts_connections(port).await {
        return false;
    }
    match family {
        EngineFamily::Postgres => crate::postgres::is_ready(port).await,
        // mariadbd opens its port only once recovery is over.
        EngineFamily::MariaDb => true,
    }
}

/// Ends an engine left running by an earlier kura process that died (kill -9): the pid
/// recorded in `pid_file` is stopped if it is alive and still that engine. Without this,
/// PostgreSQL refuses to start ("another server might be running") and the port is taken.
pub(crate) async fn end_stale(pid_file: &Path, program_name: &str, data_dir: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|text| {
        text.lines()
            .next()
            .and_then(|line| line.trim().parse::<u32>().ok())
    }) else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    // Only an engine serving *this* data directory is ours to end. A pid file copied
    // with the files (a database restored from a snapshot) names the source's engine,
    // which must live on: the file is merely stale.
    if !(cmdline.contains(program_name) && cmdline.contains(&*data_dir.to_string_lossy())) {
        let _ = std::fs::remove_file(pid_file);
        return;
    }
    tracing::warn!(
        pid,
        program = program_name,
        "ending an engine left over by an earlier kura process"
    );
    let _ = send_signal(pid, "KILL").await;
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An engine suspended by [`EngineProcess::pause`].
#[must_use = "a paused engine serves nobody until it is resumed"]
pub struct PausedEngine {
    pids: Vec<u32>,
}

impl PausedEngine {
    /// Lets the engine run again.
    pub async fn resume(self) {
        for pid in self.pids.iter().rev() {
            if let Err(error) = send_signal(*pid, "CONT").await {
                tracing::warn!(pid, %error, "could not resume an engine process");
            }
        }
    }
}

/// The processes whose parent is `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may contain spaces.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after_comm = stat.rsplit_once(')')?.1.to_owned();
                    after_comm.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Sends a signal with the system's `kill` (keeps `unsafe` out of this crate).
pub(crate) async fn send_signal(pid: u32, signal: &str) -> Result<(), EngineError> {
    let status = tokio::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(io_error("running kill"))?;
    if status.success() {
        Ok(())
    } else {
        Err(EngineError::Command {
            command: format!("kill -s {signal} {pid}"),
            status: status.to_string(),
            output: String::new(),
        })
    }
}
