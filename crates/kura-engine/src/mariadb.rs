//! MariaDB from Debian (`mariadb-server`), serving the `mysql`, `mariadb` and
//! `aurora-mysql` engines.

use std::path::PathBuf;
use std::time::Duration;

use crate::process::{EngineProcess, StopMode};
use crate::system;
use crate::{EngineConfig, EngineError, EngineFamily};

fn server_binary() -> PathBuf {
    std::env::var_os("KURA_MARIADBD")
        .map_or_else(|| PathBuf::from("/usr/sbin/mariadbd"), PathBuf::from)
}

fn install_db_binary() -> PathBuf {
    PathBuf::from("/usr/bin/mariadb-install-db")
}

fn client_binary() -> PathBuf {
    PathBuf::from("/usr/bin/mariadb")
}

fn socket(config: &EngineConfig) -> PathBuf {
    config.run_dir.join("mysqld.sock")
}

pub(crate) async fn initialize(config: &EngineConfig) -> Result<(), EngineError> {
    system::require("mariadb-install-db (mariadb-server)", &install_db_binary())?;
    system::require("mariadb (mariadb-client)", &client_binary())?;
    let user = system::lookup_user(EngineFamily::MariaDb.system_user())?;
    system::make_owned_dir(&config.data_dir, user, 0o750)?;
    system::make_owned_dir(&config.run_dir, user, 0o750)?;
    let datadir = format!("--datadir={}", config.data_dir.display());
    let root = system::SystemUser { uid: 0, gid: 0 };
    system::run_as(
        root,
        &install_db_binary(),
        &[
            "--no-defaults",
            &datadir,
            "--user=mysql",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        None,
    )
    .await?;
    if let Some(tls) = &config.tls {
        system::write_owned_file(
            &config.data_dir.join("kura-tls-cert.pem"),
            tls.cert_pem.as_bytes(),
            user,
            0o600,
        )?;
        system::write_owned_file(
            &config.data_dir.join("kura-tls-key.pem"),
            tls.key_pem.expose(),
            user,
            0o600,
        )?;
    }

    // The master user is created over the root socket of a first, private start.
    let server = start(config, Duration::from_secs(60)).await?;
    let created = run_as_root(config, &setup_sql(config)).await;
    server
        .stop(StopMode::Clean, Duration::from_secs(60))
        .await?;
    created.map(|_| ())
}

/// SQL that creates the master user (all privileges, as on RDS) and the initial database.
fn setup_sql(config: &EngineConfig) -> String {
    let user = quote(&config.master_username);
    let password = quote(&String::from_utf8_lossy(config.master_password.expose()));
    let mut sql = format!(
        "CREATE USER {user}@'%' IDENTIFIED BY {password};\nGRANT ALL PRIVILEGES ON *.* TO {user}@'%' WITH GRANT OPTION;\n"
    );
    if let Some(database) = &config.initial_database {
        sql.push_str(&format!(
            "CREATE DATABASE IF NOT EXISTS `{}`;\n",
            database.replace('`', "``")
        ));
    }
    sql.push_str("FLUSH PRIVILEGES;\n");
    sql
}

/// Sets the master user's password on the running server to `config.master_password`
/// (over the root socket, as the master user was created).
pub(crate) async fn set_master_password(config: &EngineConfig) -> Result<(), EngineError> {
    let statement = format!(
        "ALTER USER {}@'%' IDENTIFIED BY {};\n",
        quote(&config.master_username),
        quote(&String::from_utf8_lossy(config.master_password.expose()))
    );
    run_as_root(config, &statement).await.map(|_| ())
}

/// Runs `sql` on the running server as its `root` user, over the Unix socket (socket
/// authentication: kura runs as the operating system's root).
async fn run_as_root(config: &EngineConfig, sql: &str) -> Result<String, EngineError> {
    system::run_as(
        system::SystemUser { uid: 0, gid: 0 },
        &client_binary(),
        &[
            "--no-defaults",
            "-S",
            &socket(config).to_string_lossy(),
            "-u",
            "root",
        ],
        Some(sql.as_bytes()),
    )
    .await
}

/// A MariaDB string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub(crate) async fn start(
    config: &EngineConfig,
    ready_timeout: Duration,
) -> Result<EngineProcess, EngineError> {
    let server = server_binary();
    system::require("mariadbd (mariadb-server)", &server)?;
    let user = system::lookup_user(EngineFamily::MariaDb.system_user())?;
    system::make_owned_dir(&config.run_dir, user, 0o750)?;
    crate::process::end_stale(
        &config.run_dir.join("mysqld.pid"),
        "mariadbd",
        &config.data_dir,
    )
    .await;
    let mut args = vec![
        "--no-defaults".to_owned(),
        format!("--datadir={}", config.data_dir.display()),
        format!("--port={}", config.port),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--socket={}", socket(config).display()),
        format!("--pid-file={}", config.run_dir.join("mysqld.pid").display()),
        "--user=mysql".to_owned(),
        "--skip-name-resolve".to_owned(),
        format!(
            "--log-error={}",
            config.run_dir.join("mariadb.log").display()
        ),
    ];
    let cert = config.data_dir.join("kura-tls-cert.pem");
    if cert.exists() {
        args.push(format!("--ssl-cert={}", cert.display()));
        args.push(format!(
            "--ssl-key={}",
            config.data_dir.join("kura-tls-key.pem").display()
        ));
    }
    // mariadbd starts as root and drops to --user itself.
    let mut process = EngineProcess::spawn(
        EngineFamily::MariaDb,
        None,
        &server,
        &args,
        &config.run_dir.join("mariadbd.out"),
        config.port,
    )?;
    process.wait_ready(ready_timeout).await?;
    Ok(process)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped() {
        assert_eq!(quote("it's"), "'it\\'s'");
        assert_eq!(quote("a\\b"), "'a\\\\b'");
    }
}
