//! The AWS SDK for Rust against a real `kura serve`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};

const ACCESS_KEY: &str = "AKIASDKTESTSDKTEST00";
const SECRET: &str = "sdk-test-secret-0000000000000000000000";

/// A `kura serve` process on a free port with its own data directory; killed on drop.
struct Server {
    child: Child,
    endpoint: String,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kura_bin() -> PathBuf {
    std::env::var_os("KURA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/kura")
        })
}

fn start() -> Server {
    let dir =
        std::env::temp_dir().join(format!("kura-sdk-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("kura.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"eu-west-3\"\n[[accounts]]\nid = \"333333333333\"\n[[accounts.users]]\nname = \"sdk\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET}\"\npolicies = [\"arn:aws:iam::aws:policy/AdministratorAccess\"]\n"
        ),
    )
    .unwrap();
    let bin = kura_bin();
    assert!(
        bin.exists(),
        "build the server first: cargo build -p kura ({} missing)",
        bin.display()
    );
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut banner = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&banner).contains("kms list-keys") {
        match stdout.read(&mut byte) {
            Ok(1) => banner.push(byte[0]),
            _ => panic!(
                "kura exited before serving: {}",
                String::from_utf8_lossy(&banner)
            ),
        }
    }
    let banner = String::from_utf8_lossy(&banner).into_owned();
    let endpoint = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    Server {
        child,
        endpoint,
        _dir: TempDir(dir),
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn client(server: &Server) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-3"))
        .endpoint_url(&server.endpoint)
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            SECRET,
            None,
            None,
            "kura-test",
        ))
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

#[tokio::test]
async fn the_rust_sdk_drives_a_key_through_its_life() {
    let server = start();
    let kms = client(&server);

    let created = kms
        .create_key()
        .description("from the Rust SDK")
        .send()
        .await
        .unwrap();
    let meta = created.key_metadata().unwrap();
    let key_id = meta.key_id().to_owned();
    assert_eq!(meta.key_state(), Some(&KeyState::Enabled));
    assert_eq!(meta.aws_account_id(), Some("333333333333"));

    kms.create_alias()
        .alias_name("alias/sdk")
        .target_key_id(&key_id)
        .send()
        .await
        .unwrap();
    let encrypted = kms
        .encrypt()
        .key_id("alias/sdk")
        .plaintext(Blob::new(b"rust sdk".to_vec()))
        .encryption_context("tenant", "a")
        .send()
        .await
        .unwrap();
    let blob = encrypted.ciphertext_blob().unwrap().clone();
    let decrypted = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("tenant", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(decrypted.plaintext().unwrap().as_ref(), b"rust sdk");

    // Typed errors: the SDK recognises kura's error codes.
    let wrong_context = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("tenant", "b")
        .send()
        .await
        .unwrap_err();
    assert!(
        wrong_context
            .into_service_error()
            .is_invalid_ciphertext_exception()
    );

    let data_key = kms
        .generate_data_key()
        .key_id(&key_id)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    assert_eq!(data_key.plaintext().unwrap().as_ref().len(), 32);

    kms.disable_key().key_id(&key_id).send().await.unwrap();
    let disabled = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(disabled.is_disabled_exception());
    assert_eq!(
        disabled.meta().message(),
        Some(format!("{} is disabled.", meta.arn().unwrap()).as_str())
    );

    let mut pages = kms.list_keys().limit(1).into_paginator().send();
    let mut seen = 0;
    while let Some(page) = pages.next().await {
        seen += page.unwrap().keys().len();
    }
    assert_eq!(seen, 1);
}

#[tokio::test]
async fn the_rust_sdk_sees_authentication_errors() {
    let server = start();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-3"))
        .endpoint_url(&server.endpoint)
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            "wrong-secret",
            None,
            None,
            "kura-test",
        ))
        .build();
    let error = aws_sdk_kms::Client::from_conf(config)
        .list_keys()
        .send()
        .await
        .unwrap_err();
    let service_error = error.into_service_error();
    assert_eq!(
        service_error.meta().code(),
        Some("InvalidSignatureException")
    );
}
