//! `kura serve`: bootstrap the data directory, build the services, serve until a signal.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kura_crypto::{RootKey, SecretBytes};
use kura_edge::{CredentialResolver, Edge};
use kura_iam::{ADMINISTRATOR_ACCESS, Iam};
use kura_kms::Kms;
use kura_store::{Store, Table};
use kura_types::{AccountId, Clock, Region, SystemClock};

use crate::config::{Config, TlsConfig};

/// The port kura listens on by default (K-U-R-A on a phone keypad).
pub const DEFAULT_PORT: u16 = 5872;
const DEFAULT_ACCOUNT: &str = "000000000000";
const DEFAULT_USER: &str = "administrator";
const DEFAULT_REGION: &str = "us-east-1";
const META: Table = Table("kura.meta");
const META_ROOT_KEY: &str = "root_key_fingerprint";
const META_ADMIN_KEY: &str = "bootstrap_access_key_id";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:5872]. Use port 0 for any free port.
    #[arg(long, env = "KURA_LISTEN")]
    listen: Option<String>,
    /// Data directory: metadata store, root key, credentials file [default: ./kura-data].
    #[arg(long, env = "KURA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file declaring accounts, users and settings.
    #[arg(long, env = "KURA_CONFIG")]
    config: Option<PathBuf>,
    /// The AWS region this server serves [default: us-east-1].
    #[arg(long, env = "KURA_REGION")]
    region: Option<String>,
    /// Root key file [default: <data-dir>/root.key]. Keep it off the data disk to protect
    /// backups of the data directory.
    #[arg(long, env = "KURA_ROOT_KEY_FILE")]
    root_key_file: Option<PathBuf>,
    /// Serve HTTPS with a certificate from a generated local CA; its CA file is printed at
    /// start-up for the CLI's `--ca-bundle`.
    #[arg(long)]
    tls: bool,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "KURA_LOG_FORMAT")]
    log_format: LogFormat,
    /// Do not keep the audit trail (calls are only logged, LookupEvents is not served).
    /// For benchmarks that measure the cost of auditing.
    #[arg(long, env = "KURA_NO_AUDIT")]
    no_audit: bool,
    /// Which calls wait for their audit record to reach stable storage (fdatasync) before
    /// they are answered: `mutating` calls only (read-only calls such as Encrypt are
    /// answered once their record is written, which survives a crash of kura, and reach
    /// stable storage within 5 ms), or `all` calls (slower: see docs/audit.md).
    #[arg(long, value_enum, default_value_t = AuditSync::Mutating, env = "KURA_AUDIT_SYNC")]
    audit_sync: AuditSync,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AuditSync {
    All,
    Mutating,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Settings after flags, environment, configuration file and defaults are combined.
struct Settings {
    listen: String,
    data_dir: PathBuf,
    root_key_file: PathBuf,
    region: Region,
    config: Config,
    tls: TlsConfig,
    audit: bool,
    audit_sync: AuditSync,
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("invalid setting: {0}")]
    Setting(String),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    RootKey(#[from] kura_crypto::RootKeyError),
    #[error("metadata store: {0}")]
    Store(#[from] kura_store::StoreError),
    #[error("IAM: {0}")]
    Iam(#[from] kura_iam::IamError),
    #[error("KMS: {0}")]
    Kms(#[from] kura_kms::KmsError),
    #[error("RDS: {0}")]
    Rds(#[from] kura_rds::RdsError),
    #[error("audit trail: {0}")]
    Audit(#[from] kura_audit::AuditError),
    #[error("TLS: {0}")]
    Tls(#[from] kura_edge::tls::TlsError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn run(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    let settings = match settle(args) {
        Ok(settings) => settings,
        Err(error) => return fail(&error),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kura: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &StartError) -> ExitCode {
    eprintln!("kura: {error}");
    ExitCode::FAILURE
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KURA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn settle(args: ServeArgs) -> Result<Settings, StartError> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let data_dir = args
        .data_dir
        .or_else(|| config.data_dir.clone())
        .unwrap_or_else(crate::default_data_dir);
    let root_key_file = args
        .root_key_file
        .or_else(|| config.root_key_file.clone())
        .unwrap_or_else(|| data_dir.join("root.key"));
    let region_name = args
        .region
        .or_else(|| config.region.clone())
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    let region = Region::parse(&region_name).map_err(|e| StartError::Setting(e.to_string()))?;
    let listen = args
        .listen
        .or_else(|| config.listen.clone())
        .unwrap_or_else(|| format!("127.0.0.1:{DEFAULT_PORT}"));
    let tls = TlsConfig {
        self_signed: args.tls || config.tls.self_signed,
        cert_file: args.tls_cert.or_else(|| config.tls.cert_file.clone()),
        key_file: args.tls_key.or_else(|| config.tls.key_file.clone()),
    };
    Ok(Settings {
        listen,
        data_dir,
        root_key_file,
        region,
        config,
        tls,
        audit: !args.no_audit,
        audit_sync: args.audit_sync,
    })
}

async fn serve(settings: Settings) -> Result<(), StartError> {
    let data_dir = prepare_data_dir(&settings.data_dir)?;
    let (root_key, created) = RootKey::load_or_create(&settings.root_key_file)?;
    if created {
        tracing::info!(path = %settings.root_key_file.display(), "created a new root key");
    }
    let root_key = Arc::new(root_key);
    let store = Arc::new(Store::open_sqlite(&data_dir.join("kura.db"))?);
    check_root_key(&store, &root_key, &settings.root_key_file)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    let iam = Arc::new(Iam::open(store.clone(), root_key.clone(), clock.clone())?);
    let credentials_file = data_dir.join("credentials");
    bootstrap_identities(&iam, &store, &settings.config, &credentials_file)?;
    let kms = Arc::new(Kms::open(
        store.clone(),
        root_key.clone(),
        iam.clone(),
        clock.clone(),
        settings.region.clone(),
    )?);

    let trail = match settings.audit {
        true => Some(Arc::new(kura_audit::AuditTrail::open(
            kura_audit::AuditConfig {
                durability: match settings.audit_sync {
                    AuditSync::All => kura_audit::Durability::All,
                    AuditSync::Mutating => kura_audit::Durability::Mutating,
                },
                ..kura_audit::AuditConfig::new(data_dir.join("audit"))
            },
            &root_key,
            clock.clone(),
        )?)),
        false => None,
    };
    let audit: Arc<dyn kura_edge::AuditSink> = match &trail {
        Some(trail) => trail.clone(),
        None => Arc::new(kura_edge::LogAuditSink),
    };
    let rds = kura_rds::Rds::open(
        rds_settings(&settings.config, &data_dir),
        store.clone(),
        iam.clone(),
        kms.clone(),
        audit.clone(),
        clock.clone(),
        settings.region.clone(),
    )?;
    rds.start()?;

    let tls = tls_acceptor(&settings.tls, &data_dir)?;
    let mut edge = Edge::builder(settings.region.clone(), clock, iam.clone()).audit(audit.clone());
    if let Some(trail) = &trail {
        let policies = iam.clone();
        edge = edge.json_service(Arc::new(kura_audit::CloudTrail::new(
            trail.clone(),
            kura_audit::identity_policies_fn(move |principal| {
                policies.identity_policies(principal).to_vec()
            }),
        )));
    }
    let edge = edge
        .json_service(kms.clone())
        .query_service(Arc::new(kura_rds::RdsApi(rds.clone())))
        .query_service(Arc::new(kura_iam::IamService::new(iam.clone())))
        .query_service(Arc::new(kura_iam::StsService::new(iam.clone())))
        .build();
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| StartError::Listen {
            address: settings.listen.clone(),
            source,
        })?;
    let address = listener.local_addr().map_err(|source| StartError::Listen {
        address: settings.listen.clone(),
        source,
    })?;
    let endpoint = endpoint_url(address, tls.is_some());
    let aws_data_path = match crate::aws_cli::write_sts_endpoint_rules(&data_dir, &endpoint) {
        Ok(path) => Some(path),
        Err(error) => {
            tracing::warn!(%error, "cannot write the aws CLI's STS endpoint rules");
            None
        }
    };
    print_banner(
        &settings,
        &endpoint,
        &data_dir,
        &credentials_file,
        aws_data_path.as_deref(),
        tls.as_ref().map(|(_, ca)| ca.as_deref()),
    );

    let maintenance_interval = Duration::from_secs(
        settings
            .config
            .kms
            .maintenance_interval_secs
            .unwrap_or(60)
            .max(1),
    );
    tokio::spawn(maintain(kms.clone(), audit.clone(), maintenance_interval));
    kura_edge::serve(
        edge,
        listener,
        tls.map(|(acceptor, _)| acceptor),
        shutdown_signal(),
        Duration::from_secs(10),
    )
    .await;
    rds.shutdown().await;
    if let Some(trail) = &trail
        && let Err(error) = trail.shutdown().await
    {
        tracing::error!(%error, "the audit trail did not close cleanly");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Where databases live by default: `<data-dir>/rds`, if the engines' system users
/// (`postgres`, `mysql`) can traverse every directory above it; otherwise (a data
/// directory under a private home such as /root) a directory under /var/lib/kura.
fn databases_dir(data_dir: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let traversable = data_dir
        .ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0));
    if traversable {
        return data_dir.join("rds");
    }
    let digest = kura_crypto::sha256_hex(data_dir.as_os_str().as_encoded_bytes());
    let fallback = PathBuf::from("/var/lib/kura")
        .join(format!("rds-{}", digest.get(..12).unwrap_or_default()));
    tracing::info!(
        data_dir = %data_dir.display(),
        databases = %fallback.display(),
        "database engines cannot traverse into the data directory; keeping databases elsewhere (set [rds] data_dir to choose)"
    );
    fallback
}

fn rds_settings(config: &Config, data_dir: &Path) -> kura_rds::RdsSettings {
    let rds = &config.rds;
    kura_rds::RdsSettings {
        data_dir: rds
            .data_dir
            .clone()
            .unwrap_or_else(|| databases_dir(data_dir)),
        endpoint_host: rds
            .endpoint_host
            .clone()
            .unwrap_or_else(|| "127.0.0.1".to_owned()),
        first_port: rds.first_port.unwrap_or(15432),
        key_check_interval: Duration::from_secs(rds.key_check_interval_secs.unwrap_or(60).max(1)),
        recoverable_period: Duration::from_secs(
            rds.recoverable_period_hours
                .unwrap_or(7 * 24)
                .saturating_mul(3600),
        ),
        backup_day: Duration::from_secs(rds.backup_day_secs.unwrap_or(86_400).max(1)),
    }
}

fn prepare_data_dir(path: &Path) -> Result<PathBuf, StartError> {
    let io_error = |source| StartError::DataDir {
        path: path.to_owned(),
        source,
    };
    // 0711: database engines, running as their own users, must traverse into `rds/`;
    // nobody else may list the directory, and every file kura writes in it is 0600.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(path)
        .map_err(io_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711)).map_err(io_error)?;
    std::fs::canonicalize(path).map_err(io_error)
}

/// Refuses to start with a root key other than the one the store was created with:
/// every wrapped secret would fail to unwrap, far less clearly.
fn check_root_key(store: &Store, root_key: &RootKey, path: &Path) -> Result<(), StartError> {
    let recorded: Option<String> = store.read(|r| r.get(META, META_ROOT_KEY))?;
    match recorded {
        Some(fingerprint) if fingerprint == root_key.fingerprint() => Ok(()),
        Some(fingerprint) => Err(StartError::Setting(format!(
            "the root key {} (fingerprint {}) is not the one this data directory was created with (fingerprint {fingerprint})",
            path.display(),
            root_key.fingerprint()
        ))),
        None => {
            store.write(|w| w.put(META, META_ROOT_KEY, &root_key.fingerprint().to_owned()))?;
            Ok(())
        }
    }
}

/// Creates the default account and administrator (with an access key on first start), the
/// accounts and users of the configuration file, and the credentials file.
fn bootstrap_identities(
    iam: &Iam,
    store: &Store,
    config: &Config,
    credentials_file: &Path,
) -> Result<(), StartError> {
    let default_account =
        AccountId::parse(DEFAULT_ACCOUNT).map_err(|e| StartError::Setting(e.to_string()))?;
    iam.ensure_account(&default_account)?;
    iam.ensure_user(
        &default_account,
        DEFAULT_USER,
        &[ADMINISTRATOR_ACCESS.to_owned()],
    )?;
    let recorded: Option<String> = store.read(|r| r.get(META, META_ADMIN_KEY))?;
    let admin_key = match recorded {
        Some(id) if iam.resolve(&id).is_some() => id,
        _ => {
            let (id, _) = iam.create_access_key(&default_account, DEFAULT_USER)?;
            store.write(|w| w.put(META, META_ADMIN_KEY, &id))?;
            id
        }
    };

    for account in &config.accounts {
        let id = AccountId::parse(&account.id).map_err(|e| StartError::Setting(e.to_string()))?;
        iam.ensure_account(&id)?;
        for user in &account.users {
            iam.ensure_user(&id, &user.name, &user.policies)?;
            match (&user.access_key_id, &user.secret_access_key) {
                (Some(key_id), Some(secret)) => {
                    iam.put_access_key(
                        &id,
                        &user.name,
                        key_id,
                        &SecretBytes::copy_from(secret.as_bytes()),
                    )?;
                }
                (None, None) => {}
                _ => {
                    return Err(StartError::Setting(format!(
                        "user {} of account {}: give both access_key_id and secret_access_key, or neither",
                        user.name, account.id
                    )));
                }
            }
        }
    }

    if !credentials_file.exists() {
        let credential = iam
            .resolve(&admin_key)
            .ok_or_else(|| StartError::Setting(format!("access key {admin_key} vanished")))?;
        write_credentials_file(credentials_file, &admin_key, &credential.secret)?;
    }
    Ok(())
}

fn write_credentials_file(
    path: &Path,
    key_id: &str,
    secret: &SecretBytes,
) -> Result<(), StartError> {
    let write_error = |source| StartError::Write {
        path: path.to_owned(),
        source,
    };
    let mut contents = SecretBytes::new(
        format!(
            "# Written by kura on first start: the access key of user {DEFAULT_USER} in account {DEFAULT_ACCOUNT}.\n[default]\naws_access_key_id = {key_id}\naws_secret_access_key = "
        )
        .into_bytes(),
    );
    let mut bytes = contents.expose().to_vec();
    bytes.extend_from_slice(secret.expose());
    bytes.push(b'\n');
    contents = SecretBytes::new(bytes);
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_error)?;
    file.write_all(contents.expose()).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(write_error)?;
    std::fs::rename(&tmp, path).map_err(write_error)
}

/// Returns the TLS acceptor and, for a generated certificate, the CA file clients trust.
fn tls_acceptor(
    tls: &TlsConfig,
    data_dir: &Path,
) -> Result<Option<(tokio_rustls::TlsAcceptor, Option<PathBuf>)>, StartError> {
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        return Ok(Some((kura_edge::tls::acceptor_from_pem(cert, key)?, None)));
    }
    if tls.self_signed {
        let generated = kura_edge::tls::ensure_generated(&data_dir.join("tls"), &[])?;
        let acceptor =
            kura_edge::tls::acceptor_from_pem(&generated.cert_file, &generated.key_file)?;
        return Ok(Some((acceptor, Some(generated.ca_file))));
    }
    Ok(None)
}

/// The URL clients use to reach a listener on `address`.
fn endpoint_url(address: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = match address.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        ip => ip.to_string(),
    };
    format!("{scheme}://{host}:{}", address.port())
}

fn print_banner(
    settings: &Settings,
    endpoint: &str,
    data_dir: &Path,
    credentials: &Path,
    aws_data_path: Option<&Path>,
    tls: Option<Option<&Path>>,
) {
    let data_path_hint = aws_data_path
        .map(|path| {
            format!(
                "  export AWS_DATA_PATH={}   # aws CLI 2.9: role profiles (role_arn) assume roles here\n",
                path.display()
            )
        })
        .unwrap_or_default();
    let ca_flag = match tls {
        Some(Some(ca)) => format!(" --ca-bundle {}", ca.display()),
        _ => String::new(),
    };
    let audit = match settings.audit {
        true => format!(
            "{} (check: kura audit verify --data-dir {})",
            data_dir.join("audit").display(),
            data_dir.display()
        ),
        false => "off (--no-audit)".to_owned(),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "kura {} serving region {} on {endpoint}\n  data directory:   {}\n  credentials file: {} (profile \"default\" = arn:aws:iam::{DEFAULT_ACCOUNT}:user/{DEFAULT_USER})\n  audit trail:      {audit}\n  health:           {endpoint}/_kura/health   metrics: {endpoint}/metrics\nPoint the aws CLI at it:\n  export AWS_SHARED_CREDENTIALS_FILE={} AWS_DEFAULT_REGION={}\n{data_path_hint}  aws --endpoint-url {endpoint}{ca_flag} kms list-keys",
        env!("CARGO_PKG_VERSION"),
        settings.region,
        data_dir.display(),
        credentials.display(),
        credentials.display(),
        settings.region,
    );
    let _ = out.flush();
}

async fn maintain(kms: Arc<Kms>, audit: Arc<dyn kura_edge::AuditSink>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let worker = kms.clone();
        match tokio::task::spawn_blocking(move || worker.run_maintenance()).await {
            Ok(Ok(report)) if report != Default::default() => {
                tracing::info!(
                    deleted = report.deleted.len(),
                    rotated = report.rotated.len(),
                    "KMS maintenance"
                );
                for event in kms.service_events(&report) {
                    if let Err(error) = audit.record_service_event(event).await {
                        tracing::error!(%error, "could not record a KMS service event");
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "KMS maintenance failed"),
            Err(error) => tracing::error!(%error, "KMS maintenance task failed"),
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
