//! The configuration file (TOML): accounts and users for reproducible set-ups, and server
//! settings. Every field is optional; command-line flags and environment variables win
//! over the file, and the file wins over built-in defaults.
//!
//! ```toml
//! region = "ap-northeast-1"
//! listen = "127.0.0.1:5872"
//!
//! [[accounts]]
//! id = "111111111111"
//!   [[accounts.users]]
//!   name = "administrator"
//!   access_key_id = "AKIAAAAAAAAAAAAAAAAA"
//!   secret_access_key = "..."
//!   policies = ["arn:aws:iam::aws:policy/AdministratorAccess"]
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The region this server serves (`us-east-1` if unset).
    pub region: Option<String>,
    /// Address to listen on.
    pub listen: Option<String>,
    /// Where kura keeps its data.
    pub data_dir: Option<PathBuf>,
    /// Where the root key file lives (default: `<data_dir>/root.key`).
    pub root_key_file: Option<PathBuf>,
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    #[serde(default)]
    pub kms: KmsConfig,
    #[serde(default)]
    pub rds: RdsConfig,
    #[serde(default)]
    pub tls: TlsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// 12-digit account id.
    pub id: String,
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Set both keys to give the user a fixed access key (tests, reproducible set-ups).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// ARNs of managed policies to attach, e.g. `arn:aws:iam::aws:policy/AdministratorAccess`.
    #[serde(default)]
    pub policies: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// Seconds between passes that delete keys whose waiting period ended and rotate keys
    /// that are due (default 60).
    pub maintenance_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdsConfig {
    /// Where database files live (default `<data_dir>/rds`, or under /var/lib/kura when
    /// the engines' users cannot reach the data directory).
    pub data_dir: Option<PathBuf>,
    /// Host name reported in every database endpoint (default 127.0.0.1).
    pub endpoint_host: Option<String>,
    /// First loopback port given to databases that do not ask for one (default 15432).
    pub first_port: Option<u16>,
    /// Seconds between re-checks of database key access without a key event (default 60).
    pub key_check_interval_secs: Option<u64>,
    /// Hours a database may stay locked before it becomes terminal (default 168, AWS's 7 days).
    pub recoverable_period_hours: Option<u64>,
    /// Seconds in a backup day (default 86400): automated snapshots are taken once per
    /// backup day and kept for BackupRetentionPeriod days. Shorten only for tests.
    pub backup_day_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Serve HTTPS with a generated local CA (see `--tls`).
    #[serde(default)]
    pub self_signed: bool,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
            region = "ap-northeast-1"
            [[accounts]]
            id = "111111111111"
              [[accounts.users]]
              name = "administrator"
              access_key_id = "AKIAAAAAAAAAAAAAAAAA"
              secret_access_key = "secret"
              policies = ["arn:aws:iam::aws:policy/AdministratorAccess"]
        "#;
        let config: Config = toml::from_str(text).unwrap_or_default();
        assert_eq!(config.region.as_deref(), Some("ap-northeast-1"));
        assert_eq!(config.accounts.len(), 1);
        assert_eq!(config.accounts[0].users[0].name, "administrator");
    }

    #[test]
    fn rejects_unknown_fields() {
        assert!(toml::from_str::<Config>("regoin = \"x\"").is_err());
    }
}
