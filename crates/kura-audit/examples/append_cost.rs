//! What one audit record costs on this machine, piece by piece, on one core:
//! building the CloudTrail record (JSON + SHA-256), and appending it to the trail (chain
//! value, line, `pwrite`) with each durability policy.
//!
//! `cargo run --release -p kura-audit --example append_cost`
//! (`... -- build 5000000` only builds records, that many, e.g. under `perf record`)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_audit::record::{Records, api_call_records};
use kura_audit::{AuditConfig, AuditTrail, Durability};
use kura_crypto::{RootKey, SecretBytes};
use kura_edge::{
    AuditDetails, AuditEvent, AuditResource, AuditSink, Caller, IdentityType, RequestContext,
};
use kura_policy::{Principal, PrincipalKind};
use kura_types::{Region, SystemClock, Timestamp};

fn event() -> AuditEvent {
    let caller = Arc::new(Caller {
        principal: Principal {
            arn: "arn:aws:iam::111111111111:user/administrator".into(),
            account: "111111111111".into(),
            kind: PrincipalKind::User,
            user_id: "AIDABLRA7S4W4ECCVE3W".into(),
            username: Some("administrator".into()),
        },
        identity_type: IdentityType::IamUser,
        access_key_id: "AKIAAAAAAAAAAAAAAAAA".into(),
        session: None,
    });
    AuditEvent {
        ctx: RequestContext {
            request_id: "e676e3f5-af8d-4267-a706-815af7cd948a".into(),
            caller,
            region: Region::parse("ap-northeast-1").unwrap(),
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            user_agent: "Boto3/1.43.11 md/Botocore#1.43.11 ua/2.1 os/linux#6.18.44 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/D,Z,N,b,e cfg/retry-mode#legacy Botocore/1.43.11".into(),
            time: Timestamp::from_millis(1_800_000_000_000),
            via_service: None,
        },
        event_source: "kms.amazonaws.com",
        event_name: "Encrypt".into(),
        error: None,
        details: AuditDetails {
            request_parameters: Some(serde_json::json!({
                "keyId": "69275d89-4e0e-47da-af6d-b33f8d5599a4",
                "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "encryptionContext": {"dept": "it"}
            })),
            response_elements: None,
            resources: vec![AuditResource {
                account_id: "111111111111".into(),
                resource_type: "AWS::KMS::Key".into(),
                arn: "arn:aws:kms:ap-northeast-1:111111111111:key/69275d89-4e0e-47da-af6d-b33f8d5599a4".into(),
            }],
            read_only: Some(true),
            also_deliver_to: vec![],
        },
    }
}

fn per_op(elapsed: Duration, n: u32) -> f64 {
    elapsed.as_secs_f64() * 1e9 / f64::from(n)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let build_only = args.get(1).is_some_and(|a| a == "build");
    let n = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let event = event();
    let mut records = Records::default();
    let started = Instant::now();
    for _ in 0..n {
        records.clear();
        api_call_records(&event, &mut records);
    }
    let bytes = records.bytes.len();
    println!(
        "build record ({bytes} bytes JSON + SHA-256): {:.0} ns",
        per_op(started.elapsed(), n)
    );
    if build_only {
        return;
    }
    let record = records.bytes.clone();
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(kura_crypto::sha256(std::hint::black_box(&record)));
    }
    println!(
        "  of which SHA-256 of the record: {:.0} ns",
        per_op(started.elapsed(), n)
    );

    let root = RootKey::from_secret(&SecretBytes::copy_from(&[1u8; 32])).unwrap();
    for (name, durability, count) in [
        (
            "mutating (read-only call: pwrite, no wait)",
            Durability::Mutating,
            n,
        ),
        (
            "all (wait for fdatasync, one caller)",
            Durability::All,
            5_000,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            durability,
            ..AuditConfig::new(dir.path())
        };
        let trail = AuditTrail::open(config, &root, Arc::new(SystemClock)).unwrap();
        let started = Instant::now();
        for _ in 0..count {
            trail.record(event.clone()).await.unwrap();
        }
        println!(
            "record() {name}: {:.0} ns",
            per_op(started.elapsed(), count)
        );
        trail.shutdown().await.unwrap();
    }
}
