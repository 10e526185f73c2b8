//! `kura volume`: KMS-backed encrypted directories (FUSE) for any application.
//!
//! The volume key is a KMS data key: `create` asks a running kura server (or any KMS) for
//! `GenerateDataKeyWithoutPlaintext` under an encryption context that names the volume and
//! stores only the wrapped key with the volume; `mount` and `unlock` ask for `Decrypt`
//! with the same context. Requests are signed with SigV4 from the usual AWS credentials
//! (environment, or a shared credentials file and profile).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use kura_crypto::SecretBytes;
use kura_types::Clock as _;
use kura_volume::control::{self, Request, Response};
use kura_volume::{MountOptions, NewVolume, Volume, VolumeError};
use serde_json::{Value, json};
use zeroize::Zeroize as _;

const CONTEXT_KEY: &str = "kura:volume-id";
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:5872";

#[derive(Args, Debug)]
pub struct VolumeArgs {
    #[command(subcommand)]
    command: VolumeCommand,
}

#[derive(Subcommand, Debug)]
enum VolumeCommand {
    /// Create a volume: a new data key from the KMS, wrapped under --key-id.
    Create(CreateArgs),
    /// Mount a volume and serve it until interrupted (Ctrl-C, SIGTERM) or `kura volume unmount`.
    Mount(MountArgs),
    /// Lock a mounted volume: its key is dropped and every access fails with EIO.
    Lock(TargetArgs),
    /// Unlock a locked volume (asks the KMS to decrypt its key again).
    Unlock(UnlockArgs),
    /// Show a mounted volume's state.
    Status(TargetArgs),
    /// Unmount a volume served by `kura volume mount`.
    Unmount(UnmountArgs),
}

/// Where the KMS is and who is asking.
#[derive(Args, Debug, Clone)]
struct KmsArgs {
    /// KMS endpoint [env: AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL; default: http://127.0.0.1:5872].
    #[arg(long)]
    endpoint_url: Option<String>,
    /// Region [env: AWS_REGION, AWS_DEFAULT_REGION; default: us-east-1].
    #[arg(long)]
    region: Option<String>,
    /// Profile in the shared credentials file when the environment has no keys [env: AWS_PROFILE].
    #[arg(long)]
    profile: Option<String>,
    /// PEM CA certificates to trust for an https endpoint [env: AWS_CA_BUNDLE].
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// The KMS key that wraps the volume key (key id, ARN, alias name or alias ARN).
    #[arg(long)]
    key_id: String,
    /// Directory for the volume's encrypted files and metadata (new or empty).
    #[arg(long)]
    backing_dir: PathBuf,
    /// Extra encryption context pairs (KEY=VALUE), besides kura:volume-id.
    #[arg(long = "encryption-context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    #[command(flatten)]
    kms: KmsArgs,
}

#[derive(Args, Debug)]
struct MountArgs {
    #[arg(long)]
    backing_dir: PathBuf,
    /// An existing empty directory to mount the plaintext view on.
    #[arg(long)]
    mount_point: PathBuf,
    /// FUSE worker threads [default: one per CPU, at most 4].
    #[arg(long)]
    threads: Option<usize>,
    /// Send every write() to the volume at once instead of letting the kernel cache
    /// writes. Recommended for databases (faster commits, slower bulk loads; the managed
    /// databases mount this way).
    #[arg(long)]
    no_writeback_cache: bool,
    /// Control socket [default: /run/kura/volumes/<volume-id>.sock].
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// Benchmarks only: no torn-write journal (a kill -9 mid-write can then destroy the
    /// block being overwritten).
    #[arg(long, hide = true)]
    unsafe_no_journal: bool,
    #[command(flatten)]
    kms: KmsArgs,
}

#[derive(Args, Debug)]
struct TargetArgs {
    /// The volume's backing directory (to find its control socket).
    #[arg(long, required_unless_present = "control_socket")]
    backing_dir: Option<PathBuf>,
    /// The control socket of the `kura volume mount` process.
    #[arg(long)]
    control_socket: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct UnlockArgs {
    #[arg(long)]
    backing_dir: PathBuf,
    #[arg(long)]
    control_socket: Option<PathBuf>,
    #[command(flatten)]
    kms: KmsArgs,
}

#[derive(Args, Debug)]
struct UnmountArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Unmount even while files are open (they get errors from then on).
    #[arg(long)]
    force: bool,
}

pub fn run(args: VolumeArgs) -> ExitCode {
    init_logging();
    let result = match args.command {
        VolumeCommand::Create(a) => create(a),
        VolumeCommand::Mount(a) => mount(a),
        VolumeCommand::Lock(a) => simple(&a, &Request::Lock),
        VolumeCommand::Status(a) => simple(&a, &Request::Status),
        VolumeCommand::Unmount(a) => simple(&a.target, &Request::Unmount { force: a.force }),
        VolumeCommand::Unlock(a) => unlock(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kura volume: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KURA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn create(a: CreateArgs) -> Result<(), String> {
    let kms = KmsClient::new(&a.kms)?;
    let volume_id = kura_volume::new_volume_id();
    let mut context = BTreeMap::new();
    for pair in &a.context {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--encryption-context {pair:?}: expected KEY=VALUE"))?;
        context.insert(k.to_owned(), v.to_owned());
    }
    context.insert(CONTEXT_KEY.to_owned(), volume_id.clone());
    let out = kms.call(
        "GenerateDataKeyWithoutPlaintext",
        &json!({"KeyId": a.key_id, "KeySpec": "AES_256", "EncryptionContext": context}),
    )?;
    let blob = b64_field(&out, "CiphertextBlob")?;
    let arn = out
        .get("KeyId")
        .and_then(Value::as_str)
        .unwrap_or(&a.key_id)
        .to_owned();
    let volume = Volume::create(
        &a.backing_dir,
        &blob,
        NewVolume {
            volume_id: volume_id.clone(),
            kms_key_arn: arn.clone(),
            encryption_context: context,
        },
    )
    .map_err(|e| e.to_string())?;
    print_json(&json!({
        "VolumeId": volume_id,
        "KeyId": arn,
        "BackingDir": volume.backing_dir().display().to_string(),
    }));
    Ok(())
}

/// Asks the KMS for the volume's plaintext key.
fn decrypt_key(kms: &KmsClient, volume: &Volume) -> Result<SecretBytes, String> {
    let blob = volume.wrapped_key().map_err(|e| e.to_string())?;
    let out = kms.call(
        "Decrypt",
        &json!({
            "CiphertextBlob": STANDARD.encode(&blob),
            "EncryptionContext": volume.encryption_context(),
            "KeyId": volume.metadata().kms_key_arn,
        }),
    )?;
    let mut text = out
        .get("Plaintext")
        .and_then(Value::as_str)
        .ok_or("the KMS returned no Plaintext")?
        .to_owned();
    let key = STANDARD.decode(text.as_bytes()).map_err(|e| e.to_string());
    text.zeroize();
    drop(out);
    Ok(SecretBytes::new(key?))
}

enum Event {
    Signal(i32),
    Unmount {
        force: bool,
        reply: mpsc::Sender<Response>,
    },
    Gone,
}

fn mount(a: MountArgs) -> Result<(), String> {
    // Block the termination signals in every thread; one thread waits for them.
    let signals = {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGHUP);
        set.thread_block()
            .map_err(|e| format!("blocking signals: {e}"))?;
        set
    };
    match kura_volume::clear_dead_mount(&a.mount_point) {
        Ok(true) => eprintln!(
            "kura volume: detached the dead mount left at {} by a previous process",
            a.mount_point.display()
        ),
        Ok(false) => {}
        Err(e) => return Err(e.to_string()),
    }
    kura_volume::check_fuse_available(&a.mount_point).map_err(|e| e.to_string())?;
    let volume = Volume::open(&a.backing_dir).map_err(|e| e.to_string())?;
    let socket = a
        .control_socket
        .clone()
        .unwrap_or_else(|| control::default_socket_path(volume.id()));
    let kms = KmsClient::new(&a.kms)?;
    let key = decrypt_key(&kms, &volume)?;
    if let Err(e) = kura_volume::protect_process_memory() {
        eprintln!("kura volume: warning: could not lock memory against swap: {e}");
    }
    let defaults = MountOptions::default();
    let options = MountOptions {
        threads: a.threads.unwrap_or(defaults.threads).max(1),
        writeback_cache: !a.no_writeback_cache,
        journal: !a.unsafe_no_journal,
        ..defaults
    };
    let mounted = Arc::new(
        volume
            .mount(&a.mount_point, key, options)
            .map_err(|e| e.to_string())?,
    );

    let (tx, rx) = mpsc::channel::<Event>();
    let handler: control::Handler = {
        let mounted = mounted.clone();
        let tx = std::sync::Mutex::new(tx.clone());
        Arc::new(move |request: &Request| handle(&mounted, &tx, request))
    };
    let server = match control::ControlServer::start(&socket, handler) {
        Ok(server) => server,
        Err(e) => {
            let _ = mounted.unmount();
            return Err(e.to_string());
        }
    };
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            while let Ok(sig) = signals.wait() {
                if tx.send(Event::Signal(sig as i32)).is_err() {
                    break;
                }
            }
        });
    }
    {
        let tx = tx.clone();
        let mounted = mounted.clone();
        std::thread::spawn(move || {
            mounted.wait();
            let _ = tx.send(Event::Gone);
        });
    }
    println!(
        "kura volume {} mounted at {} (control socket {})",
        mounted.volume().id(),
        mounted.mount_point().display(),
        server.path().display()
    );
    let _ = std::io::stdout().flush();

    loop {
        match rx.recv() {
            Ok(Event::Signal(sig)) => {
                eprintln!("kura volume: signal {sig}, unmounting");
                if mounted.unmount().is_err() {
                    eprintln!("kura volume: busy; locking and detaching");
                    mounted.force_unmount();
                }
                break;
            }
            Ok(Event::Unmount { force, reply }) => {
                let result = if force {
                    mounted.force_unmount();
                    Ok(())
                } else {
                    mounted.unmount()
                };
                match result {
                    Ok(()) => {
                        let _ = reply.send(Response::ok(None));
                        break;
                    }
                    Err(e) => {
                        let _ = reply.send(Response::error(e.to_string()));
                    }
                }
            }
            Ok(Event::Gone) | Err(_) => {
                eprintln!("kura volume: the file system was unmounted");
                break;
            }
        }
    }
    drop(server);
    mounted.force_unmount();
    Ok(())
}

fn handle(
    mounted: &kura_volume::MountedVolume,
    tx: &std::sync::Mutex<mpsc::Sender<Event>>,
    request: &Request,
) -> Response {
    match request {
        Request::Status => Response::ok(Some(mounted.status())),
        Request::Lock => {
            mounted.lock();
            Response::ok(Some(mounted.status()))
        }
        Request::Unlock { key } => {
            let bytes = match STANDARD.decode(key.as_bytes()) {
                Ok(b) => SecretBytes::new(b),
                Err(_) => return Response::error("the key is not base64"),
            };
            match mounted.unlock(bytes) {
                Ok(()) => Response::ok(Some(mounted.status())),
                Err(e) => Response::error(e.to_string()),
            }
        }
        Request::Unmount { force } => {
            let (reply_tx, reply_rx) = mpsc::channel();
            let sent = tx
                .lock()
                .map(|tx| {
                    tx.send(Event::Unmount {
                        force: *force,
                        reply: reply_tx,
                    })
                    .is_ok()
                })
                .unwrap_or(false);
            if !sent {
                return Response::error("the volume is shutting down");
            }
            reply_rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| Response::error("timed out"))
        }
    }
}

fn socket_for(backing_dir: Option<&Path>, explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let dir = backing_dir.ok_or("--backing-dir or --control-socket is required")?;
    let volume = Volume::open(dir).map_err(|e| e.to_string())?;
    Ok(control::default_socket_path(volume.id()))
}

fn simple(target: &TargetArgs, request: &Request) -> Result<(), String> {
    let socket = socket_for(
        target.backing_dir.as_deref(),
        target.control_socket.as_deref(),
    )?;
    let response = control::call(&socket, request).map_err(|e: VolumeError| e.to_string())?;
    finish(response)
}

fn unlock(a: UnlockArgs) -> Result<(), String> {
    let volume = Volume::open(&a.backing_dir).map_err(|e| e.to_string())?;
    let socket = socket_for(Some(&a.backing_dir), a.control_socket.as_deref())?;
    let kms = KmsClient::new(&a.kms)?;
    let key = decrypt_key(&kms, &volume)?;
    volume.check_key(&key).map_err(|e| e.to_string())?;
    let request = Request::Unlock {
        key: STANDARD.encode(key.expose()),
    };
    drop(key);
    let response = control::call(&socket, &request).map_err(|e| e.to_string())?;
    finish(response)
}

fn finish(response: Response) -> Result<(), String> {
    if !response.ok {
        return Err(response.error.unwrap_or_else(|| "failed".into()));
    }
    match response.status {
        Some(status) => print_json(&serde_json::to_value(status).unwrap_or(Value::Null)),
        None => print_json(&json!({"ok": true})),
    }
    Ok(())
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

fn b64_field(out: &Value, name: &str) -> Result<Vec<u8>, String> {
    let text = out
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the KMS response has no {name}"))?;
    STANDARD
        .decode(text)
        .map_err(|e| format!("{name} is not base64: {e}"))
}

/// AWS credentials: access key, secret, optional session token.
struct Credentials {
    access_key_id: String,
    secret: SecretBytes,
    session_token: Option<String>,
}

fn credentials(profile: Option<&str>) -> Result<Credentials, String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if profile.is_none()
        && let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        return Ok(Credentials {
            access_key_id: id,
            secret: SecretBytes::new(secret.into_bytes()),
            session_token: env("AWS_SESSION_TOKEN"),
        });
    }
    let profile = profile
        .map(str::to_owned)
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let path = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws").join("credentials")))
        .ok_or("no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_SHARED_CREDENTIALS_FILE")?;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no credentials in the environment, and {}: {e}",
            path.display()
        )
    })?;
    let mut section = String::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        if section == profile
            && let Some((k, v)) = line.split_once('=')
        {
            values.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    let id = values.remove("aws_access_key_id");
    let secret = values.remove("aws_secret_access_key");
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id,
            secret: SecretBytes::new(secret.into_bytes()),
            session_token: values.remove("aws_session_token"),
        }),
        _ => Err(format!(
            "profile {profile:?} in {} has no aws_access_key_id/aws_secret_access_key",
            path.display()
        )),
    }
}

/// A minimal KMS client: JSON 1.1 over HTTP/1.1 (or HTTPS), signed with SigV4.
struct KmsClient {
    endpoint: Endpoint,
    region: String,
    credentials: Credentials,
    tls: Option<Arc<rustls::ClientConfig>>,
}

struct Endpoint {
    https: bool,
    host: String,
    port: u16,
}

impl KmsClient {
    fn new(args: &KmsArgs) -> Result<Self, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let url = args
            .endpoint_url
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_KMS"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let endpoint = parse_url(&url)?;
        let region = args
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let credentials = credentials(args.profile.as_deref())?;
        let tls = if endpoint.https {
            let bundle = args
                .ca_bundle
                .clone()
                .or_else(|| env("AWS_CA_BUNDLE").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
            Some(tls_config(&bundle)?)
        } else {
            None
        };
        Ok(Self {
            endpoint,
            region,
            credentials,
            tls,
        })
    }

    fn call(&self, operation: &str, body: &Value) -> Result<Value, String> {
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let host = if (self.endpoint.https && self.endpoint.port == 443)
            || (!self.endpoint.https && self.endpoint.port == 80)
        {
            self.endpoint.host.clone()
        } else {
            format!("{}:{}", self.endpoint.host, self.endpoint.port)
        };
        let now = kura_types::SystemClock.now();
        let mut headers = http::HeaderMap::new();
        let mut put = |name: &'static str, value: &str| -> Result<(), String> {
            let value = http::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            headers.insert(name, value);
            Ok(())
        };
        put("host", &host)?;
        put("content-type", "application/x-amz-json-1.1")?;
        put("x-amz-target", &format!("TrentService.{operation}"))?;
        put("x-amz-date", &now.amz_date())?;
        if let Some(token) = &self.credentials.session_token {
            put("x-amz-security-token", token)?;
        }
        let parts = kura_edge::sigv4::RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: &body,
        };
        let authorization = kura_edge::sigv4::authorization_header(
            &parts,
            &self.credentials.access_key_id,
            self.credentials.secret.expose(),
            &self.region,
            "kms",
            now,
        )
        .map_err(|e| e.to_string())?;
        let mut request = format!("POST / HTTP/1.1\r\nauthorization: {authorization}\r\n");
        for (name, value) in &headers {
            request.push_str(name.as_str());
            request.push_str(": ");
            request.push_str(value.to_str().unwrap_or_default());
            request.push_str("\r\n");
        }
        request.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        ));
        let mut raw = request.into_bytes();
        raw.extend_from_slice(&body);
        let response = self.exchange(&raw)?;
        raw.zeroize();
        let (status, body) = parse_response(&response)?;
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if status == 200 {
            return Ok(value);
        }
        let kind = value
            .get("__type")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .rsplit('#')
            .next()
            .unwrap_or("error")
            .to_owned();
        let message = value
            .get("message")
            .or_else(|| value.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or("");
        Err(
            format!("KMS {operation} failed: {kind} (HTTP {status}) {message}")
                .trim_end()
                .to_owned(),
        )
    }

    fn exchange(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        let address = format!("{}:{}", self.endpoint.host, self.endpoint.port);
        let tcp = TcpStream::connect(&address)
            .map_err(|e| format!("cannot reach the KMS at {address}: {e}"))?;
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(30)));
        let mut response = Vec::new();
        match &self.tls {
            None => {
                let mut tcp = tcp;
                tcp.write_all(request).map_err(|e| e.to_string())?;
                tcp.read_to_end(&mut response).map_err(|e| e.to_string())?;
            }
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from(self.endpoint.host.clone())
                    .map_err(|e| format!("TLS server name: {e}"))?;
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| format!("TLS: {e}"))?;
                let mut stream = rustls::StreamOwned::new(conn, tcp);
                stream.write_all(request).map_err(|e| format!("TLS: {e}"))?;
                // A server closing without close_notify is fine once the body is complete.
                if let Err(e) = stream.read_to_end(&mut response)
                    && response.is_empty()
                {
                    return Err(format!("TLS: {e}"));
                }
            }
        }
        Ok(response)
    }
}

fn tls_config(bundle: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(bundle)
        .map_err(|e| format!("CA bundle {}: {e}", bundle.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("CA bundle {}: {e}", bundle.display()))?;
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "--endpoint-url {url:?}: expected http:// or https://"
        ));
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            p.parse::<u16>()
                .map_err(|_| format!("--endpoint-url {url:?}: bad port"))?,
        ),
        _ => (authority.to_owned(), if https { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(format!("--endpoint-url {url:?}: no host"));
    }
    Ok(Endpoint { https, host, port })
}

/// Status code and body of an HTTP/1.1 response (Content-Length, chunked, or to EOF).
fn parse_response(raw: &[u8]) -> Result<(u16, &[u8]), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the KMS sent an incomplete HTTP response")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "bad HTTP response head")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("bad HTTP status line")?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "content-length" {
                length = value.trim().parse::<usize>().ok();
            } else if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
    }
    if chunked {
        // The first chunk is enough for these small JSON answers only if it is the whole
        // body; KMS answers are sent with a Content-Length by kura, so this is a fallback.
        let nl = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunked body")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&body[..nl])
                .map_err(|_| "bad chunk")?
                .trim(),
            16,
        )
        .map_err(|_| "bad chunk size")?;
        return Ok((
            status,
            body.get(nl + 2..nl + 2 + size).ok_or("short chunk")?,
        ));
    }
    match length {
        Some(n) => Ok((status, body.get(..n).ok_or("short HTTP body")?)),
        None => Ok((status, body)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_and_responses_parse() {
        let e = parse_url("http://127.0.0.1:5872").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port),
            (false, "127.0.0.1", 5872)
        );
        let e = parse_url("https://kms.example.com/").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port),
            (true, "kms.example.com", 443)
        );
        assert!(parse_url("ftp://x").is_err());
        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\nhelloEXTRA";
        assert_eq!(parse_response(raw).unwrap(), (400, &b"hello"[..]));
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), (200, &b"hello"[..]));
    }
}
