//! PostgreSQL 15 from Debian (`postgresql-15`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::EngineProcess;
use crate::system::{self, SystemUser};
use crate::{EngineConfig, EngineError, EngineFamily, io_error};

fn bin_dir() -> PathBuf {
    std::env::var_os("KURA_POSTGRES_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Settings kura owns, rewritten at every start (`include`d from postgresql.conf).
const KURA_CONF: &str = "kura.conf";

pub(crate) async fn initialize(config: &EngineConfig) -> Result<(), EngineError> {
    let initdb = bin_dir().join("initdb");
    system::require("initdb (postgresql-15)", &initdb)?;
    let user = system::lookup_user(EngineFamily::Postgres.system_user())?;
    system::make_owned_dir(&config.data_dir, user, 0o700)?;
    system::make_owned_dir(&config.run_dir, user, 0o700)?;

    // The password file sits next to the data directory (on the same, encrypted,
    // filesystem) only for as long as initdb runs.
    let password_file = sibling(&config.data_dir, ".initdb-password");
    system::write_owned_file(&password_file, config.master_password.expose(), user, 0o600)?;
    let data_dir = config.data_dir.to_string_lossy().into_owned();
    let pwfile_arg = format!("--pwfile={}", password_file.display());
    let result = system::run_as(
        user,
        &initdb,
        &[
            "-D",
            &data_dir,
            "-U",
            &config.master_username,
            &pwfile_arg,
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        ],
        None,
    )
    .await;
    let _ = std::fs::remove_file(&password_file);
    result?;

    let main_conf = config.data_dir.join("postgresql.conf");
    append(
        &main_conf,
        &format!("\ninclude_if_exists = '{KURA_CONF}'\n"),
    )?;
    if let Some(tls) = &config.tls {
        system::write_owned_file(
            &config.data_dir.join("server.crt"),
            tls.cert_pem.as_bytes(),
            user,
            0o600,
        )?;
        system::write_owned_file(
            &config.data_dir.join("server.key"),
            tls.key_pem.expose(),
            user,
            0o600,
        )?;
    }
    if let Some(database) = &config.initial_database {
        create_database(user, &config.data_dir, database).await?;
    }
    Ok(())
}

/// Creates a database in single-user mode, before the server ever listens.
async fn create_database(user: SystemUser, data_dir: &Path, name: &str) -> Result<(), EngineError> {
    let statement = format!("CREATE DATABASE \"{}\";\n", name.replace('"', "\"\""));
    let data_dir = data_dir.to_string_lossy().into_owned();
    system::run_as(
        user,
        &bin_dir().join("postgres"),
        &["--single", "-D", &data_dir, "-j", "postgres"],
        Some(statement.as_bytes()),
    )
    .await
    .map(|_| ())
}

pub(crate) async fn start(
    config: &EngineConfig,
    ready_timeout: Duration,
) -> Result<EngineProcess, EngineError> {
    let postgres = bin_dir().join("postgres");
    system::require("postgres (postgresql-15)", &postgres)?;
    let user = system::lookup_user(EngineFamily::Postgres.system_user())?;
    system::make_owned_dir(&config.run_dir, user, 0o700)?;
    crate::process::end_stale(
        &config.data_dir.join("postmaster.pid"),
        "postgres",
        &config.data_dir,
    )
    .await;
    let ssl = if config.tls.is_some() || config.data_dir.join("server.crt").exists() {
        "on"
    } else {
        "off"
    };
    let settings = format!(
        "# Written by kura at every start.\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nssl = {ssl}\npassword_encryption = scram-sha-256\n",
        config.port,
        config.run_dir.display()
    );
    system::write_owned_file(
        &config.data_dir.join(KURA_CONF),
        settings.as_bytes(),
        user,
        0o600,
    )?;
    allow_service_login(&config.data_dir, &config.master_username)?;
    let args = vec![
        "-D".to_owned(),
        config.data_dir.to_string_lossy().into_owned(),
    ];
    let mut process = EngineProcess::spawn(
        EngineFamily::Postgres,
        Some(user),
        &postgres,
        &args,
        &config.run_dir.join("postgres.log"),
        config.port,
    )?;
    process.wait_ready(ready_timeout).await?;
    Ok(process)
}

/// The `pg_hba.conf` line that lets kura itself log in as the master user: over the
/// Unix socket in kura's run directory (mode 0700, owned by `postgres`), only for the
/// operating-system user `postgres` (peer authentication through the `kura` map). Clients
/// use TCP with their password, as before; kura uses this to change the master password
/// (ModifyDBInstance), which it does not know the old value of.
const SERVICE_HBA_MARKER: &str = "# kura: the service's own login (master password changes)";

/// Adds kura's login to `pg_hba.conf` (first, so it wins) and `pg_ident.conf`, once.
fn allow_service_login(data_dir: &Path, master_username: &str) -> Result<(), EngineError> {
    let hba = data_dir.join("pg_hba.conf");
    let text =
        std::fs::read_to_string(&hba).map_err(io_error(format!("reading {}", hba.display())))?;
    if !text.contains(SERVICE_HBA_MARKER) {
        let line = format!("{SERVICE_HBA_MARKER}\nlocal all {master_username} peer map=kura\n");
        std::fs::write(&hba, format!("{line}{text}"))
            .map_err(io_error(format!("writing {}", hba.display())))?;
    }
    let ident = data_dir.join("pg_ident.conf");
    let text = std::fs::read_to_string(&ident)
        .map_err(io_error(format!("reading {}", ident.display())))?;
    let mapping = format!("kura postgres {master_username}");
    if !text.lines().any(|l| l.trim() == mapping) {
        append(&ident, &format!("{mapping}\n"))?;
    }
    Ok(())
}

/// Sets the master user's password on the running server to `config.master_password`.
/// The server gets a SCRAM verifier, never the password itself.
pub(crate) async fn set_master_password(config: &EngineConfig) -> Result<(), EngineError> {
    let psql = bin_dir().join("psql");
    system::require("psql (postgresql-client-15)", &psql)?;
    let user = system::lookup_user(EngineFamily::Postgres.system_user())?;
    let verifier = scram_verifier(config.master_password.expose())?;
    let statement = format!(
        "ALTER ROLE \"{}\" PASSWORD '{verifier}';\n",
        config.master_username.replace('"', "\"\"")
    );
    let socket_dir = config.run_dir.to_string_lossy().into_owned();
    let port = config.port.to_string();
    system::run_as(
        user,
        &psql,
        &[
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &socket_dir,
            "-p",
            &port,
            "-U",
            &config.master_username,
            "-d",
            "postgres",
        ],
        Some(statement.as_bytes()),
    )
    .await
    .map(|_| ())
}

/// A SCRAM-SHA-256 verifier as PostgreSQL stores it (RFC 5802 / 7677: salted password by
/// PBKDF2, stored key and server key).
fn scram_verifier(password: &[u8]) -> Result<String, EngineError> {
    use base64::Engine as _;
    const ITERATIONS: u32 = 4096;
    let mut salt = [0u8; 16];
    kura_crypto::fill_random(&mut salt).map_err(|e| EngineError::Io {
        action: "making a password salt".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut salted = zeroize::Zeroizing::new([0u8; 32]);
    kura_crypto::pbkdf2_hmac_sha256(password, &salt, ITERATIONS, salted.as_mut());
    let client_key =
        zeroize::Zeroizing::new(kura_crypto::hmac_sha256(salted.as_ref(), b"Client Key"));
    let stored_key = kura_crypto::sha256(client_key.as_ref());
    let server_key = kura_crypto::hmac_sha256(salted.as_ref(), b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    ))
}

/// `pg_isready`: exit status 0 means the server accepts logins.
pub(crate) async fn is_ready(port: u16) -> bool {
    tokio::process::Command::new(bin_dir().join("pg_isready"))
        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
        .status()
        .await
        .is_ok_and(|status| status.success())
}

fn append(path: &Path, text: &str) -> Result<(), EngineError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_error(format!("opening {}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(io_error(format!("writing {}", path.display())))
}

/// `dir` with `suffix` appended to its last component.
pub(crate) fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    dir.with_file_name(name)
}
