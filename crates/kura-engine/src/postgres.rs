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
