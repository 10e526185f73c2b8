//! Time-driven KMS behaviour with a controlled clock: keys are deleted when their waiting
//! period ends (not before), and automatic rotation happens when due, never on disabled
//! keys, and catches up when a key is enabled again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use kura_crypto::RootKey;
use kura_edge::{AuditDetails, CredentialResolver, RequestContext};
use kura_iam::{ADMINISTRATOR_ACCESS, Iam};
use kura_kms::{KeyEventKind, Kms, KmsError};
use kura_store::Store;
use kura_types::{AccountId, Clock, ManualClock, Region, Timestamp};
use serde_json::{Value, json};

const DAY_MS: i64 = 86_400_000;

struct Fixture {
    clock: Arc<ManualClock>,
    kms: Kms,
    iam: Arc<Iam>,
    access_key: String,
}

impl Fixture {
    fn new() -> Self {
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_800_000_000)));
        let store = Arc::new(Store::in_memory().unwrap());
        let root =
            Arc::new(RootKey::from_secret(&kura_crypto::random_secret(32).unwrap()).unwrap());
        let iam = Arc::new(Iam::open(store.clone(), root.clone(), clock.clone()).unwrap());
        let account = AccountId::parse("111122223333").unwrap();
        iam.ensure_account(&account).unwrap();
        iam.ensure_user(&account, "admin", &[ADMINISTRATOR_ACCESS.to_owned()])
            .unwrap();
        let (access_key, _) = iam.create_access_key(&account, "admin").unwrap();
        let region = Region::parse("us-east-1").unwrap();
        let kms = Kms::open(store, root, iam.clone(), clock.clone(), region).unwrap();
        Self {
            clock,
            kms,
            iam,
            access_key,
        }
    }

    fn ctx(&self) -> RequestContext {
        RequestContext {
            request_id: "test".into(),
            caller: self.iam.resolve(&self.access_key).unwrap().caller.clone(),
            region: Region::parse("us-east-1").unwrap(),
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            user_agent: "test".into(),
            time: self.clock.now(),
            via_service: None,
        }
    }

    fn call(&self, operation: &str, body: Value) -> Result<Value, KmsError> {
        let bytes = serde_json::to_vec(&body).unwrap();
        let out = self
            .kms
            .invoke(&self.ctx(), operation, &bytes, &mut AuditDetails::default())?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    fn advance_days(&self, days: i64) {
        self.clock.advance_millis(days * DAY_MS);
    }
}

#[test]
fn keys_are_deleted_when_their_waiting_period_ends() {
    let f = Fixture::new();
    let mut events = f.kms.subscribe();
    let key_id = f.call("CreateKey", json!({})).unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    f.call(
        "CreateAlias",
        json!({"AliasName": "alias/doomed", "TargetKeyId": key_id}),
    )
    .unwrap();
    let blob = f
        .call("Encrypt", json!({"KeyId": key_id, "Plaintext": "aGk="}))
        .unwrap()["CiphertextBlob"]
        .clone();
    f.call(
        "ScheduleKeyDeletion",
        json!({"KeyId": key_id, "PendingWindowInDays": 7}),
    )
    .unwrap();

    f.advance_days(6);
    assert!(f.kms.run_maintenance().unwrap().deleted.is_empty());
    assert_eq!(
        f.call("DescribeKey", json!({"KeyId": key_id})).unwrap()["KeyMetadata"]["KeyState"],
        "PendingDeletion"
    );

    f.advance_days(1);
    let report = f.kms.run_maintenance().unwrap();
    assert_eq!(report.deleted.len(), 1);
    // The deletion is recorded as CloudTrail's `DeleteKey` service event.
    let [event] = f.kms.service_events(&report).try_into().unwrap();
    assert_eq!(event.event_name, "DeleteKey");
    assert_eq!(event.account, "111122223333");
    assert_eq!(event.resources[0].arn, report.deleted[0]);
    assert_eq!(
        event.service_event_details,
        Some(json!({ "keyId": key_id }))
    );
    assert!(matches!(
        f.call("DescribeKey", json!({"KeyId": key_id})),
        Err(KmsError::NotFound(_))
    ));
    assert!(matches!(
        f.call("DescribeKey", json!({"KeyId": "alias/doomed"})),
        Err(KmsError::NotFound(_))
    ));
    assert!(matches!(
        f.call("Decrypt", json!({"CiphertextBlob": blob})),
        Err(KmsError::AccessDenied(_))
    ));
    let kinds: Vec<KeyEventKind> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            KeyEventKind::Created,
            KeyEventKind::DeletionScheduled,
            KeyEventKind::Deleted
        ]
    );
}

#[test]
fn a_cancelled_deletion_is_never_carried_out() {
    let f = Fixture::new();
    let key_id = f.call("CreateKey", json!({})).unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    f.call(
        "ScheduleKeyDeletion",
        json!({"KeyId": key_id, "PendingWindowInDays": 7}),
    )
    .unwrap();
    f.call("CancelKeyDeletion", json!({"KeyId": key_id}))
        .unwrap();
    f.advance_days(30);
    assert!(f.kms.run_maintenance().unwrap().deleted.is_empty());
    assert_eq!(
        f.call("DescribeKey", json!({"KeyId": key_id})).unwrap()["KeyMetadata"]["KeyState"],
        "Disabled"
    );
}

#[test]
fn automatic_rotation_happens_when_due_and_never_on_disabled_keys() {
    let f = Fixture::new();
    let key_id = f.call("CreateKey", json!({})).unwrap()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_blob = f
        .call("Encrypt", json!({"KeyId": key_id, "Plaintext": "b25l"}))
        .unwrap()["CiphertextBlob"]
        .clone();
    f.call(
        "EnableKeyRotation",
        json!({"KeyId": key_id, "RotationPeriodInDays": 90}),
    )
    .unwrap();

    f.advance_days(89);
    assert!(f.kms.run_maintenance().unwrap().rotated.is_empty());
    f.advance_days(1);
    let report = f.kms.run_maintenance().unwrap();
    assert_eq!(report.rotated.len(), 1);
    let events = f.kms.service_events(&report);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_name, "RotateKey");
    let rotations = f
        .call("ListKeyRotations", json!({"KeyId": key_id}))
        .unwrap();
    assert_eq!(rotations["Rotations"][0]["RotationType"], "AUTOMATIC");
    let status = f
        .call("GetKeyRotationStatus", json!({"KeyId": key_id}))
        .unwrap();
    let next = status["NextRotationDate"].as_f64().unwrap();
    let now = f.clock.now().epoch_seconds();
    assert!((next - now - 90.0 * 86_400.0).abs() < 1.0);

    // A disabled key is not rotated; once enabled again, an overdue rotation happens.
    f.call("DisableKey", json!({"KeyId": key_id})).unwrap();
    f.advance_days(120);
    assert!(f.kms.run_maintenance().unwrap().rotated.is_empty());
    f.call("EnableKey", json!({"KeyId": key_id})).unwrap();
    assert_eq!(f.kms.run_maintenance().unwrap().rotated.len(), 1);
    assert_eq!(
        f.call("ListKeyRotations", json!({"KeyId": key_id}))
            .unwrap()["Rotations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Everything encrypted before any rotation still decrypts.
    let plain = f
        .call("Decrypt", json!({"CiphertextBlob": first_blob}))
        .unwrap()["Plaintext"]
        .clone();
    assert_eq!(plain, "b25l");
}
