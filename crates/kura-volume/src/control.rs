//! The control socket of a volume served by `kura volume mount`: a Unix socket (mode
//! 0600, root only) speaking one JSON request and one JSON response per connection.
//!
//! ```text
//! {"op":"status"}                      -> {"ok":true,"status":{...}}
//! {"op":"lock"}                        -> {"ok":true,"status":{...}}
//! {"op":"unlock","key":"<base64>"}     -> {"ok":true,...} or {"ok":false,"error":"..."}
//! {"op":"unmount","force":false}       -> {"ok":true} (the server then exits)
//! ```

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize as _;

use crate::{Status, VolumeError};

/// Where `kura volume mount` puts the control socket of volume `volume_id`.
pub fn default_socket_path(volume_id: &str) -> PathBuf {
    PathBuf::from("/run/kura/volumes").join(format!("{volume_id}.sock"))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Lock,
    /// `key`: the plaintext volume key, base64 (the socket is root-only).
    Unlock {
        key: String,
    },
    Unmount {
        #[serde(default)]
        force: bool,
    },
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Self::Unlock { key } = self {
            key.zeroize();
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Response {
    pub fn ok(status: Option<Status>) -> Self {
        Self {
            ok: true,
            error: None,
            status,
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            status: None,
        }
    }
}

/// Handles one request.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A listening control socket; removed when dropped.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Connections being answered; dropping the server lets them finish (an `unmount`
    /// request is answered after the volume is gone, just before the process exits).
    answering: Arc<AtomicUsize>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .finish()
    }
}

impl ControlServer {
    /// Listens on `path` (its directory is created 0700; a stale socket is replaced, a
    /// live one is an error: another process serves this volume).
    pub fn start(path: &Path, handler: Handler) -> Result<Self, VolumeError> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            // A directory of our own (such as /run/kura/volumes): only root may enter it.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| VolumeError::io(format!("creating {}", dir.display()), e))?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(VolumeError::Busy(format!(
                    "{} is in use: the volume is already served by another process",
                    path.display()
                )));
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| VolumeError::io(format!("listening on {}", path.display()), e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| VolumeError::io(format!("chmod {}", path.display()), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let answering = Arc::new(AtomicUsize::new(0));
        let answering2 = answering.clone();
        let thread = std::thread::Builder::new()
            .name("kura-volume-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let handler = handler.clone();
                    let answering = answering2.clone();
                    answering.fetch_add(1, Ordering::AcqRel);
                    // One thread per connection: a slow client cannot block a lock.
                    let _ = std::thread::Builder::new()
                        .name("kura-volume-control-conn".into())
                        .spawn(move || {
                            serve_one(conn, &handler);
                            answering.fetch_sub(1, Ordering::AcqRel);
                        });
                }
            })
            .map_err(|e| VolumeError::io("starting the control thread", e))?;
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
            answering,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.answering.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(conn: UnixStream, handler: &Handler) {
    // Only root (or the owner of this process) may talk to a volume.
    let allowed = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw())
        .unwrap_or(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let response = if allowed {
        let mut line = String::new();
        let mut reader = BufReader::new(conn);
        match reader.read_line(&mut line) {
            Ok(_) => {
                let parsed = serde_json::from_str::<Request>(&line);
                line.zeroize();
                match parsed {
                    Ok(request) => handler(&request),
                    Err(e) => Response::error(format!("bad request: {e}")),
                }
            }
            Err(e) => Response::error(format!("reading the request: {e}")),
        }
    } else {
        Response::error("permission denied")
    };
    if let Ok(mut text) = serde_json::to_string(&response) {
        text.push('\n');
        let _ = writer.write_all(text.as_bytes());
    }
}

/// Sends one request to the control socket at `path` and returns the response.
pub fn call(path: &Path, request: &Request) -> Result<Response, VolumeError> {
    let mut conn = UnixStream::connect(path).map_err(|e| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ) {
            VolumeError::Mount(format!(
                "no volume is served at {} (is `kura volume mount` running?)",
                path.display()
            ))
        } else {
            VolumeError::io(format!("connecting to {}", path.display()), e)
        }
    })?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut text =
        serde_json::to_string(request).map_err(|e| VolumeError::Metadata(e.to_string()))?;
    text.push('\n');
    let written = conn.write_all(text.as_bytes());
    text.zeroize();
    written.map_err(|e| VolumeError::io("sending the request", e))?;
    let mut line = String::new();
    BufReader::new(conn)
        .read_line(&mut line)
        .map_err(|e| VolumeError::io("reading the response", e))?;
    serde_json::from_str(&line).map_err(|e| VolumeError::Metadata(format!("bad response: {e}")))
}
