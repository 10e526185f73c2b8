//! Tests of the trail as a whole: writing, group commit, rotation, restart, crash
//! recovery, and detection of every kind of tampering.

#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kura_crypto::{RootKey, SecretBytes};
use kura_edge::{AuditResource, AuditSink, ServiceEvent};
use kura_types::{Region, SystemClock, Timestamp};

use crate::record::tests::{event, user};
use crate::verify::{Report, verify_trail};
use crate::{
    AttributeKey, AuditConfig, AuditError, AuditTrail, Durability, LookupQuery, chain, segment,
    staging,
};

fn root_key() -> RootKey {
    RootKey::from_secret(&SecretBytes::copy_from(&[9u8; 32])).unwrap()
}

fn config(dir: &Path) -> AuditConfig {
    AuditConfig {
        segment_bytes: 64 * 1024,
        staging_bytes: 256 * 1024,
        // Digests only when the tests ask (and at start-up and shutdown).
        digest_interval: Duration::from_secs(3600),
        ..AuditConfig::new(dir)
    }
}

fn open(dir: &Path) -> AuditTrail {
    AuditTrail::open(config(dir), &root_key(), Arc::new(SystemClock)).unwrap()
}

fn public_key(dir: &Path) -> Vec<u8> {
    crate::keyfile::load(dir, &root_key()).unwrap().public_key()
}

fn verify(dir: &Path) -> Report {
    verify_trail(dir, &public_key(dir)).unwrap()
}

const T0: i64 = 1_800_000_000_000;

/// Records `n` Encrypt calls of alice (account 1111…) numbered from `first`.
async fn record_calls(trail: &AuditTrail, first: i64, n: i64) {
    for i in first..first + n {
        let caller = user("111111111111", "alice", "AKIAALICE");
        trail
            .record(event(caller, "Encrypt", T0 + i * 1000))
            .await
            .unwrap();
    }
}

/// Records `per_task` Encrypt calls from each of `tasks` concurrent tasks.
async fn concurrent_calls(trail: &Arc<AuditTrail>, tasks: i64, per_task: i64) {
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let trail = trail.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    let caller = user("111111111111", "alice", "AKIAALICE");
                    trail
                        .record(event(caller, "Encrypt", T0 + t * 1000 + i))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
}

/// A closed trail with `n` records: a digest after every 4 records, and the shutdown one.
async fn closed_trail(dir: &Path, n: i64) {
    let trail = open(dir);
    for chunk in 0..(n + 3) / 4 {
        let count = 4.min(n - chunk * 4);
        record_calls(&trail, chunk * 4, count).await;
        trail.digest_now().await.unwrap();
    }
    trail.shutdown().await.unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    segment::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn problem(report: &Report) -> String {
    report
        .problem
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| panic!("no problem found: {report:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trail_verifies_and_keeps_its_chain_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    closed_trail(dir.path(), 10).await;
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.records, report.last_seq), (10, 10));
    assert_eq!(report.unsigned_records, 0);
    // start-up, 3 requested, shutdown
    assert_eq!(report.digests, 5);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // Restart: the chain and the digest chain continue.
    let trail = open(dir.path());
    record_calls(&trail, 10, 3).await;
    trail.shutdown().await.unwrap();
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.records, report.last_seq, report.digests),
        (13, 13, 7)
    );

    // Files: segments trimmed to JSON lines, no spare left behind.
    for path in segments(dir.path()) {
        for line in read_lines(&path) {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(value["record"]["eventID"].is_string());
        }
    }
    let mut exported = Vec::new();
    assert_eq!(
        crate::export::export(dir.path(), None, &mut exported).unwrap(),
        13
    );
    assert_eq!(
        crate::export::export(dir.path(), Some("222222222222"), &mut Vec::new()).unwrap(),
        0
    );
    let first: serde_json::Value =
        serde_json::from_slice(exported.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["eventName"], "Encrypt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_record_is_found_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    closed_trail(dir.path(), 10).await;
    let path = &segments(dir.path())[0];
    let mut lines = read_lines(path);
    lines[3] = lines[3].replace("\"Encrypt\"", "\"Decrypt\"");
    write_lines(path, &lines);
    let found = problem(&verify(dir.path()));
    assert!(found.contains("segment-000001.jsonl line 4 "), "{found}");
    assert!(found.contains("seq 4"), "{found}");
    assert!(found.contains("modified"), "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_record_is_found() {
    let dir = tempfile::tempdir().unwrap();
    closed_trail(dir.path(), 10).await;
    let path = &segments(dir.path())[0];
    let mut lines = read_lines(path);
    lines.remove(3);
    write_lines(path, &lines);
    let found = problem(&verify(dir.path()));
    assert!(found.contains("line 4 "), "{found}");
    assert!(found.contains("seq 4 is missing"), "{found}");
    assert!(found.contains("deleted"), "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inserted_record_is_found() {
    let dir = tempfile::tempdir().unwrap();
    closed_trail(dir.path(), 10).await;
    let path = &segments(dir.path())[0];
    let mut lines = read_lines(path);
    let copy = lines[1].clone();
    lines.insert(5, copy);
    write_lines(path, &lines);
    let found = problem(&verify(dir.path()));
    assert!(found.contains("line 6 "), "{found}");
    assert!(
        found.contains("seq 2 found where seq 6 was expected"),
        "{found}"
    );
    assert!(found.contains("inserted"), "{found}");

    // A forged record with the right sequence number breaks the chain instead.
    let mut lines = read_lines(path);
    lines.remove(5);
    let forged = lines[5].replace("\"Encrypt\"", "\"ScheduleKeyDeletion\"");
    lines.insert(5, forged);
    write_lines(path, &lines);
    let found = problem(&verify(dir.path()));
    assert!(
        found.contains("line 6 ") && found.contains("chain hash"),
        "{found}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_records_are_found() {
    let dir = tempfile::tempdir().unwrap();
    closed_trail(dir.path(), 10).await;
    let path = &segments(dir.path())[0];
    let mut lines = read_lines(path);
    lines.swap(6, 7);
    write_lines(path, &lines);
    let found = problem(&verify(dir.path()));
    assert!(found.contains("line 7 "), "{found}");
    assert!(
        found.contains("seq 8 found where seq 7 was expected"),
        "{found}"
    );
    assert!(found.contains("reordered"), "{found}");
}

/// Rewrites record `index` (0-based line) and recomputes every later chain value, as an
/// attacker who knows the format (but not the signing key) would.
fn rewrite_with_consistent_chain(path: &Path, index: usize) {
    let lines = read_lines(path);
    let mut head = crate::chain::GENESIS;
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let parsed = crate::chain::parse_line(line.as_bytes()).unwrap();
        let record = if i == index {
            String::from_utf8_lossy(parsed.record).replace("\"Encrypt\"", "\"Decrypt\"")
        } else {
            String::from_utf8_lossy(parsed.record).into_owned()
        };
        head = crate::chain::link(
            &head,
            parsed.seq,
            &crate::chain::record_digest(record.as_bytes()),
        );
        let mut bytes = Vec::new();
        crate::chain::encode_line(&mut bytes, parsed.seq, &head, record.as_bytes());
        out.push(String::from_utf8(bytes).unwrap().trim_end().to_owned());
    }
    write_lines(path, &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_chain_is_caught_by_the_signed_digests() {
    let dir = tempfile::tempdir().unwrap();
    closed_trail(dir.path(), 10).await;
    let path = &segments(dir.path())[0];
    rewrite_with_consistent_chain(path, 5);
    let found = problem(&verify(dir.path()));
    // Record 6 is between the digests at seq 4 and seq 8: the one at 8 catches it.
    assert!(
        found.contains("line 8 ") && found.contains("seq 8"),
        "{found}"
    );
    assert!(found.contains("signed digest #3"), "{found}");
    assert!(found.contains("from seq 5 to seq 8"), "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_newest_records_is_caught_by_the_last_digest() {
    let dir = tempfile::tempdir().unwrap();
    closed_trail(dir.path(), 10).await;
    let path = &segments(dir.path())[0];
    let mut lines = read_lines(path);
    lines.truncate(7);
    write_lines(path, &lines);
    let found = problem(&verify(dir.path()));
    assert!(found.contains("covers records up to seq 10"), "{found}");
    assert!(found.contains("ends at seq 7"), "{found}");
    // The server refuses to sign over a damaged trail.
    let error = AuditTrail::open(config(dir.path()), &root_key(), Arc::new(SystemClock))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("damaged"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_digests_are_found() {
    let dir = tempfile::tempdir().unwrap();
    closed_trail(dir.path(), 8).await;
    let digests = dir.path().join(crate::digest::DIGEST_FILE);
    let original = read_lines(&digests);

    let mut edited = original.clone();
    edited[2] = edited[2].replace("\"reason\":\"requested\"", "\"reason\":\"heartbeat\"");
    write_lines(&digests, &edited);
    let found = problem(&verify(dir.path()));
    assert!(
        found.contains("digests.jsonl line 3") && found.contains("signature"),
        "{found}"
    );

    let mut removed = original.clone();
    removed.remove(1);
    write_lines(&digests, &removed);
    let found = problem(&verify(dir.path()));
    assert!(
        found.contains("digests.jsonl line 2") && found.contains("digest #3 found where digest #2"),
        "{found}"
    );

    // A digest signed by another key (a forger who replaced the key file would also need
    // the root key to wrap it).
    write_lines(&digests, &original);
    let other = verify_trail(
        dir.path(),
        &kura_crypto::SigningKey::generate().unwrap().0.public_key(),
    )
    .unwrap();
    assert!(problem(&other).contains("does not verify"));
    assert!(verify(dir.path()).is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        durability: Durability::All,
        ..config(dir.path())
    };
    let trail = Arc::new(AuditTrail::open(config, &root_key(), Arc::new(SystemClock)).unwrap());
    concurrent_calls(&trail, 64, 25).await;
    let stats = trail.stats();
    let records = stats.records.load(std::sync::atomic::Ordering::Relaxed);
    let syncs = stats.syncs.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(records, 1600);
    assert!(syncs < records / 2, "{syncs} flushes for {records} records");
    trail.shutdown().await.unwrap();
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 1600);
    assert!(report.segments > 1, "64 KiB segments must have rotated");
}

/// Copies the trail's files as a crash would leave them: what was written so far,
/// without the clean shutdown.
fn crash_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_write_after_a_crash_is_discarded_not_reported_as_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let crashed = dir.path().join("crashed");
    let trail = open(&live);
    record_calls(&trail, 0, 6).await;
    trail.digest_now().await.unwrap();
    record_calls(&trail, 6, 3).await;
    trail.publish().unwrap();
    crash_copy(&live, &crashed);
    trail.shutdown().await.unwrap();

    // The crash interrupted the next batch half-way: half a line after the data.
    let active = segments(&crashed)
        .into_iter()
        .find(|p| std::fs::read(p).unwrap().first() == Some(&b'{'))
        .unwrap();
    let bytes = std::fs::read(&active).unwrap();
    let end = segment::scan(&bytes).data_end;
    let mut torn = bytes.clone();
    torn[end..end + 20].copy_from_slice(b"{\"seq\":10,\"hash\":\"ab");
    std::fs::write(&active, &torn).unwrap();
    // A digest whose write was interrupted, too.
    let digests = crashed.join(crate::digest::DIGEST_FILE);
    let mut digest_bytes = std::fs::read(&digests).unwrap();
    digest_bytes.extend_from_slice(b"{\"digest\":{\"version\":1");
    std::fs::write(&digests, &digest_bytes).unwrap();

    let report = verify(&crashed);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 9);
    assert_eq!(report.unsigned_records, 3);
    assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("never made durable"))
    );

    // Restart: the torn bytes are discarded, every acknowledged record is kept, and the
    // chain continues at seq 10.
    let trail = open(&crashed);
    record_calls(&trail, 9, 2).await;
    trail.shutdown().await.unwrap();
    let report = verify(&crashed);
    assert!(report.is_intact(), "{report:?}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!((report.records, report.unsigned_records), (11, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_the_data_are_tampering_unless_they_can_be_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    closed_trail(dir.path(), 6).await;
    let trail = open(dir.path());
    record_calls(&trail, 6, 2).await;
    trail.shutdown().await.unwrap();
    let all = segments(dir.path());
    assert_eq!(all.len(), 2);
    // Garbage at the end of a segment that is followed by another one.
    let mut first = std::fs::read(&all[0]).unwrap();
    first.extend_from_slice(b"{\"seq\":7");
    std::fs::write(&all[0], &first).unwrap();
    let found = problem(&verify(dir.path()));
    assert!(
        found.contains("segment-000001.jsonl") && found.contains("followed by more records"),
        "{found}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_records_changed_after_the_last_digest() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let crashed = dir.path().join("crashed");
    let trail = open(&live);
    record_calls(&trail, 0, 4).await;
    trail.publish().unwrap();
    crash_copy(&live, &crashed);
    trail.shutdown().await.unwrap();
    let active = &segments(&crashed)[0];
    let bytes = std::fs::read(active).unwrap();
    let text = String::from_utf8_lossy(&bytes).replacen("\"alice\"", "\"mallory\"", 1);
    std::fs::write(active, text.as_bytes()).unwrap();
    match AuditTrail::open(config(&crashed), &root_key(), Arc::new(SystemClock)) {
        Err(AuditError::Corrupt(problem)) => {
            assert!(problem.location.contains("line 1"), "{problem}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_per_account_newest_first_and_paged() {
    let dir = tempfile::tempdir().unwrap();
    let trail = open(dir.path());
    for i in 0..30 {
        let (account, name) = if i % 3 == 0 {
            ("222222222222", "bob")
        } else {
            ("111111111111", "alice")
        };
        let op = if i % 2 == 0 { "Encrypt" } else { "DescribeKey" };
        trail
            .record(event(
                user(account, name, &format!("AKIA{name}")),
                op,
                T0 + i * 1000,
            ))
            .await
            .unwrap();
    }
    let query =
        |attribute: Option<(AttributeKey, &str)>, max: usize, before: Option<u64>| LookupQuery {
            account: "111111111111".to_owned(),
            region: Some("ap-northeast-1".to_owned()),
            attribute: attribute.map(|(k, v)| (k, v.to_owned())),
            start_millis: None,
            end_millis: None,
            max_results: max,
            before_seq: before,
        };
    let all = trail.lookup(&query(None, 50, None)).unwrap();
    assert_eq!(all.events.len(), 20);
    assert!(!all.more);
    assert!(all.events.windows(2).all(|w| w[0].seq > w[1].seq));
    assert!(
        all.events
            .iter()
            .all(|e| e.username.as_deref() == Some("alice"))
    );

    let first = trail.lookup(&query(None, 8, None)).unwrap();
    assert!(first.more);
    let second = trail
        .lookup(&query(None, 50, first.events.last().map(|e| e.seq)))
        .unwrap();
    assert_eq!(first.events.len() + second.events.len(), 20);

    let described = trail
        .lookup(&query(
            Some((AttributeKey::EventName, "DescribeKey")),
            50,
            None,
        ))
        .unwrap();
    assert!(!described.events.is_empty());
    assert!(
        described
            .events
            .iter()
            .all(|e| e.event_name == "DescribeKey")
    );
    let by_key = trail
        .lookup(&query(
            Some((AttributeKey::AccessKeyId, "AKIAbob")),
            50,
            None,
        ))
        .unwrap();
    assert!(by_key.events.is_empty(), "another account's key");
    let by_resource = trail
        .lookup(&query(Some((AttributeKey::ResourceName, "k1")), 50, None))
        .unwrap();
    assert_eq!(by_resource.events.len(), 20);
    let one = &all.events[3];
    let by_id = trail
        .lookup(&query(
            Some((AttributeKey::EventId, &one.event_id)),
            50,
            None,
        ))
        .unwrap();
    assert_eq!(by_id.events.len(), 1);
    assert_eq!(by_id.events[0].record, one.record);

    let mut windowed = query(None, 50, None);
    windowed.start_millis = Some(T0 + 10_000);
    windowed.end_millis = Some(T0 + 19_000);
    let window = trail.lookup(&windowed).unwrap();
    assert!(
        window
            .events
            .iter()
            .all(|e| (T0 + 10_000..=T0 + 19_000).contains(&e.event_time_millis))
    );
    assert_eq!(window.events.len(), 7);
    trail.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_events_are_recorded_from_async_and_blocking_code() {
    let dir = tempfile::tempdir().unwrap();
    let trail = Arc::new(open(dir.path()));
    let event = |name: &str| ServiceEvent {
        account: "111111111111".to_owned(),
        region: Region::parse("ap-northeast-1").unwrap(),
        time: Timestamp::from_millis(T0),
        event_source: "kms.amazonaws.com",
        event_name: name.to_owned(),
        resources: vec![AuditResource {
            account_id: "111111111111".to_owned(),
            resource_type: "AWS::KMS::Key".to_owned(),
            arn: "arn:aws:kms:ap-northeast-1:111111111111:key/k9".to_owned(),
        }],
        service_event_details: Some(serde_json::json!({"keyId": "k9"})),
        read_only: false,
    };
    trail
        .record_service_event(event("RotateKey"))
        .await
        .unwrap();
    let blocking = trail.clone();
    let delete = event("DeleteKey");
    tokio::task::spawn_blocking(move || blocking.record_service_event_blocking(&delete))
        .await
        .unwrap()
        .unwrap();
    let page = trail
        .lookup(&LookupQuery {
            account: "111111111111".to_owned(),
            region: None,
            attribute: Some((AttributeKey::ResourceName, "k9".to_owned())),
            start_millis: None,
            end_millis: None,
            max_results: 50,
            before_seq: None,
        })
        .unwrap();
    let names: Vec<&str> = page.events.iter().map(|e| e.event_name.as_str()).collect();
    assert_eq!(names, vec!["DeleteKey", "RotateKey"]);
    assert!(
        page.events[0]
            .record
            .contains("\"eventType\":\"AwsServiceEvent\"")
    );
    trail.shutdown().await.unwrap();
    assert!(
        trail
            .record_service_event(event("RotateKey"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_come_on_their_own_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        segment_bytes: 64 * 1024,
        durability: Durability::All,
        digest_interval: Duration::from_millis(50),
        digest_max_records: 5,
        ..AuditConfig::new(dir.path())
    };
    let trail = AuditTrail::open(config, &root_key(), Arc::new(SystemClock)).unwrap();
    record_calls(&trail, 0, 12).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let digests = trail
        .stats()
        .digests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(digests >= 3, "{digests}");
    // Everything is signed now, without a shutdown digest.
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.unsigned_records, 0);
    trail.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutating_durability_only_mutating_calls_wait_for_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        durability: Durability::Mutating,
        read_only_sync_delay: Duration::from_millis(200),
        ..config(dir.path())
    };
    let trail = AuditTrail::open(config, &root_key(), Arc::new(SystemClock)).unwrap();
    let syncs = || {
        trail
            .stats()
            .syncs
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // Read-only: answered once written (to the staging ring), before any flush.
    record_calls(&trail, 0, 3).await;
    assert_eq!(syncs(), 0);
    let staged = staging::recover_lines(dir.path(), 0, chain::GENESIS).unwrap();
    assert_eq!(
        segment::scan(&staged).lines.len(),
        3,
        "written to the staging ring before the answer"
    );
    // A mutating call waits for the flush, which covers the earlier records too.
    let mut create = event(user("111111111111", "alice", "AKIAALICE"), "CreateKey", T0);
    create.details.read_only = Some(false);
    trail.record(create).await.unwrap();
    assert_eq!(syncs(), 1);
    // Read-only records reach stable storage within the delay without any waiter.
    record_calls(&trail, 4, 2).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(syncs(), 2);
    trail.shutdown().await.unwrap();
    assert!(verify(dir.path()).is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_all_durability_every_call_waits_for_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        durability: Durability::All,
        ..config(dir.path())
    };
    let trail = AuditTrail::open(config, &root_key(), Arc::new(SystemClock)).unwrap();
    for i in 0..3 {
        record_calls(&trail, i, 1).await;
        assert_eq!(
            trail
                .stats()
                .syncs
                .load(std::sync::atomic::Ordering::Relaxed),
            i as u64 + 1
        );
    }
    trail.shutdown().await.unwrap();
}

/// A trail whose flusher never copies or flushes on its own (for crash tests).
fn lazy_config(dir: &Path) -> AuditConfig {
    AuditConfig {
        read_only_sync_delay: Duration::from_secs(3600),
        heartbeat_interval: Duration::from_secs(3600),
        ..config(dir)
    }
}

fn open_lazy(dir: &Path) -> AuditTrail {
    AuditTrail::open(lazy_config(dir), &root_key(), Arc::new(SystemClock)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_calls_only_in_the_staging_ring_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (live, crashed) = (dir.path().join("live"), dir.path().join("crashed"));
    let trail = open_lazy(&live);
    record_calls(&trail, 0, 4).await;
    trail.digest_now().await.unwrap();
    // These five are answered, but only the staging ring holds them.
    record_calls(&trail, 4, 5).await;
    crash_copy(&live, &crashed);
    trail.shutdown().await.unwrap();
    let in_segments: usize = segments(&crashed)
        .iter()
        .map(|p| segment::scan(&std::fs::read(p).unwrap()).lines.len())
        .sum();
    assert_eq!(in_segments, 4, "the crash came before the flusher copied");

    // Start-up recovers them, and the chain goes on after them.
    let trail = open(&crashed);
    let page = trail
        .lookup(&LookupQuery {
            account: "111111111111".to_owned(),
            region: None,
            attribute: None,
            start_millis: None,
            end_millis: None,
            max_results: 50,
            before_seq: None,
        })
        .unwrap();
    assert_eq!(page.events.len(), 9);
    record_calls(&trail, 9, 2).await;
    trail.shutdown().await.unwrap();
    let report = verify(&crashed);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 11);

    // A second start-up finds nothing left to recover (the ring starts afresh).
    let trail = open(&crashed);
    trail.shutdown().await.unwrap();
    assert_eq!(verify(&crashed).records, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_cut_short_in_the_ring_ends_the_recovery_there() {
    let dir = tempfile::tempdir().unwrap();
    let (live, crashed) = (dir.path().join("live"), dir.path().join("crashed"));
    let trail = open_lazy(&live);
    record_calls(&trail, 0, 6).await;
    crash_copy(&live, &crashed);
    trail.shutdown().await.unwrap();
    // The crash hit while the fourth call was copying its line in: half of it is there.
    let ring_path = crashed.join(staging::RING_FILE);
    let mut ring = std::fs::read(&ring_path).unwrap();
    let newlines: Vec<usize> = ring
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let (third_end, fourth_end) = (newlines[2], newlines[3]);
    let cut = third_end + (fourth_end - third_end) / 2;
    ring[cut..=fourth_end].fill(0);
    std::fs::write(&ring_path, &ring).unwrap();

    let trail = open(&crashed);
    trail.shutdown().await.unwrap();
    let report = verify(&crashed);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        report.records, 3,
        "the calls after the torn one were never answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_staging_ring_wraps_and_fills_without_losing_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        // About eight records: calls must wait for (or do) the copy to the segments.
        staging_bytes: 8 * 1024,
        ..lazy_config(dir.path())
    };
    let trail = Arc::new(AuditTrail::open(config, &root_key(), Arc::new(SystemClock)).unwrap());
    concurrent_calls(&trail, 16, 25).await;
    trail.shutdown().await.unwrap();
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 400);
}
