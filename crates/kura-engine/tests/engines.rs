//! Real PostgreSQL 15 and MariaDB, started by kura-engine, used with their own clients.
//! Needs root (engines run as their system users) and the Debian packages installed by
//! `scripts/deps.sh test`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kura_crypto::SecretBytes;
use kura_engine::{EngineConfig, EngineFamily, StopMode, TlsMaterial};

const PASSWORD: &str = "correct-horse-battery";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(family: EngineFamily, root: &Path) -> EngineConfig {
    // Engines run as their own users, who must be able to reach the directories.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let certificate = kura_edge::tls::generate_certificate("db", &[]).unwrap();
    EngineConfig {
        family,
        data_dir: root.join("data"),
        run_dir: root.join("run"),
        port: free_port(),
        master_username: "admin".into(),
        master_password: SecretBytes::copy_from(PASSWORD.as_bytes()),
        initial_database: Some("app".into()),
        tls: Some(TlsMaterial {
            cert_pem: certificate.chain_pem,
            key_pem: certificate.key_pem,
        }),
    }
}

fn psql(port: u16, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            &format!("host=127.0.0.1 port={port} user=admin dbname=app sslmode=require"),
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn mariadb(port: u16, sql: &str) -> String {
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-u",
            "admin",
            &format!("-p{PASSWORD}"),
            "--ssl",
            "-N",
            "-B",
            "app",
            "-e",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mariadb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

const USERS_TABLE_PG: &str = "CREATE TABLE users (id SERIAL PRIMARY KEY, name VARCHAR(100), email VARCHAR(100), created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP); INSERT INTO users (name, email) VALUES ('Alice', 'alice@example.com'), ('Bob', 'bob@example.com'), ('Charlie', 'charlie@example.com');";

#[tokio::test(flavor = "multi_thread")]
async fn postgres_serves_over_tls_and_recovers_from_an_immediate_stop() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(EngineFamily::Postgres, dir.path());
    kura_engine::initialize(&config).await.unwrap();
    let server = kura_engine::start(&config, Duration::from_secs(60))
        .await
        .unwrap();

    psql(config.port, USERS_TABLE_PG);
    assert_eq!(
        psql(config.port, "SELECT name FROM users ORDER BY id"),
        "Alice\nBob\nCharlie"
    );
    assert_eq!(
        psql(
            config.port,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ),
        "t"
    );
    // The master password is required.
    let refused = Command::new("psql")
        .args([
            &format!("host=127.0.0.1 port={} user=admin dbname=app", config.port),
            "-c",
            "select 1",
        ])
        .env("PGPASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!refused.status.success());

    psql(
        config.port,
        "INSERT INTO users (name, email) VALUES ('David', 'david@example.com')",
    );
    server
        .stop(StopMode::Immediate, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(!kura_engine::accepts_connections(config.port).await);

    let server = kura_engine::start(&config, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(psql(config.port, "SELECT count(*) FROM users"), "4");
    server
        .stop(StopMode::Clean, Duration::from_secs(30))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_serves_the_master_user_and_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(EngineFamily::MariaDb, dir.path());
    kura_engine::initialize(&config).await.unwrap();
    let server = kura_engine::start(&config, Duration::from_secs(60))
        .await
        .unwrap();

    mariadb(
        config.port,
        "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100)); INSERT INTO users (name) VALUES ('Alice'), ('Bob');",
    );
    assert_eq!(
        mariadb(config.port, "SELECT name FROM users ORDER BY id"),
        "Alice\nBob"
    );
    let cipher = mariadb(config.port, "SHOW SESSION STATUS LIKE 'Ssl_cipher'");
    assert!(
        cipher.starts_with("Ssl_cipher\t") && cipher.len() > "Ssl_cipher\t".len(),
        "{cipher}"
    );

    server
        .stop(StopMode::Immediate, Duration::from_secs(30))
        .await
        .unwrap();
    let server = kura_engine::start(&config, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(mariadb(config.port, "SELECT count(*) FROM users"), "2");
    server
        .stop(StopMode::Clean, Duration::from_secs(60))
        .await
        .unwrap();
}
