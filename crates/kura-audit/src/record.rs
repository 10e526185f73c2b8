//! CloudTrail records: how one call (or one event kura makes on its own) is written down.
//!
//! The member order follows CloudTrail's own records. Records are serialized once, in the
//! request's task, into compact JSON; those bytes are what the chain hashes and what
//! LookupEvents and `kura audit export` return.

use std::borrow::Cow;

use std::net::IpAddr;

use kura_edge::{AuditEvent, AuditResource, IdentityType, ServiceEvent, SessionIssuer};
use kura_types::Timestamp;
use serde_json::Value;
use uuid::Uuid;

use crate::chain;
use crate::json::{Object, key};

/// The CloudTrail record format version kura writes.
pub const EVENT_VERSION: &str = "1.11";
/// What CloudTrail shows for the identity, address and agent of events the service makes
/// on its own.
pub const AWS_INTERNAL: &str = "AWS Internal";
/// CloudTrail's marker for a parameter whose value is withheld.
pub const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// Members that carry plaintext or ciphertext: removed from records, as KMS does.
const DROPPED_MEMBERS: &[&str] = &["plaintext", "ciphertextblob", "ciphertextforrecipient"];
/// Members that carry secrets: their value is replaced by [`HIDDEN`].
const HIDDEN_MEMBERS: &[&str] = &[
    "secretaccesskey",
    "sessiontoken",
    "password",
    "newpassword",
    "oldpassword",
    "masteruserpassword",
    "privatekey",
    "privatekeyplaintext",
    "secretstring",
    "secretbinary",
    "keymaterial",
    "encryptedkeymaterial",
    "importtoken",
];

/// One record ready for the writer: its bytes, their hash and what the digests note.
#[derive(Debug, Clone)]
pub struct Entry {
    pub bytes: Vec<u8>,
    pub digest: [u8; 32],
    /// `eventTime`, in milliseconds since the epoch.
    pub time_millis: i64,
}

/// The records of one call, serialized back to back into one buffer (reused from call
/// to call by the caller, so the hot path does not allocate per record).
#[derive(Debug, Default)]
pub struct Records {
    pub bytes: Vec<u8>,
    pub spans: Vec<Span>,
}

/// Where one record is in [`Records::bytes`], its SHA-256 and its `eventTime`.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub digest: [u8; 32],
    pub time_millis: i64,
}

impl Records {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }

    /// The bytes of the record at `span`.
    pub fn get(&self, span: &Span) -> &[u8] {
        self.bytes.get(span.start..span.end).unwrap_or_default()
    }

    fn push(&mut self, record: &RecordOut<'_>, time_millis: i64) {
        let start = self.bytes.len();
        record.write(&mut self.bytes);
        let end = self.bytes.len();
        let digest = chain::record_digest(self.bytes.get(start..end).unwrap_or_default());
        self.spans.push(Span {
            start,
            end,
            digest,
            time_millis,
        });
    }

    fn into_entries(self) -> Vec<Entry> {
        self.spans
            .iter()
            .map(|span| Entry {
                bytes: self.get(span).to_vec(),
                digest: span.digest,
                time_millis: span.time_millis,
            })
            .collect()
    }
}

/// `userIdentity.sessionContext` of an assumed role.
struct SessionContextOut<'a> {
    issuer: &'a SessionIssuer,
    account_id: &'a str,
}

impl SessionContextOut<'_> {
    fn write(&self, out: &mut Object<'_>) {
        out.object(key!("sessionIssuer"), |issuer| {
            issuer.str(key!("type"), "Role");
            issuer.str(key!("principalId"), &self.issuer.role_id);
            issuer.str(key!("arn"), &self.issuer.role_arn);
            issuer.str(key!("accountId"), self.account_id);
            issuer.str(key!("userName"), &self.issuer.role_name);
        });
        out.object(key!("attributes"), |attributes| {
            attributes.display(
                key!("creationDate"),
                self.issuer.created.iso8601_seconds_display(),
            );
            attributes.str(key!("mfaAuthenticated"), "false");
        });
    }
}

#[derive(Default)]
struct UserIdentityOut<'a> {
    kind: Option<&'static str>,
    principal_id: Option<&'a str>,
    arn: Option<&'a str>,
    account_id: &'a str,
    access_key_id: Option<&'a str>,
    user_name: Option<&'a str>,
    session_context: Option<SessionContextOut<'a>>,
    invoked_by: Option<&'a str>,
}

impl UserIdentityOut<'_> {
    fn write(&self, out: &mut Object<'_>) {
        out.opt_str(key!("type"), self.kind);
        out.opt_str(key!("principalId"), self.principal_id);
        out.opt_str(key!("arn"), self.arn);
        out.str(key!("accountId"), self.account_id);
        out.opt_str(key!("accessKeyId"), self.access_key_id);
        out.opt_str(key!("userName"), self.user_name);
        if let Some(context) = &self.session_context {
            out.object(key!("sessionContext"), |o| context.write(o));
        }
        out.opt_str(key!("invokedBy"), self.invoked_by);
    }
}

/// Where the call came from (`sourceIPAddress`): the caller's address, or the service
/// that called on its behalf.
enum SourceOut<'a> {
    Address(IpAddr),
    Named(&'a str),
}

/// One CloudTrail record, borrowed from the event it describes. [`RecordOut::write`]
/// writes the members in the order of CloudTrail's own records.
struct RecordOut<'a> {
    user_identity: UserIdentityOut<'a>,
    event_time: Timestamp,
    event_source: &'a str,
    event_name: &'a str,
    aws_region: &'a str,
    source: SourceOut<'a>,
    user_agent: &'a str,
    error_code: Option<&'a str>,
    error_message: Option<&'a str>,
    request_parameters: Option<&'a Value>,
    response_elements: Option<&'a Value>,
    request_id: Option<&'a str>,
    event_id: Uuid,
    read_only: bool,
    resources: &'a [AuditResource],
    event_type: &'static str,
    recipient_account_id: &'a str,
    shared_event_id: Option<Uuid>,
    service_event_details: Option<&'a Value>,
}

impl RecordOut<'_> {
    fn write(&self, bytes: &mut Vec<u8>) {
        let mut out = Object::open(bytes);
        out.str(key!("eventVersion"), EVENT_VERSION);
        out.object(key!("userIdentity"), |o| self.user_identity.write(o));
        with_iso8601_seconds(self.event_time, |text| out.str(key!("eventTime"), text));
        out.str(key!("eventSource"), self.event_source);
        out.str(key!("eventName"), self.event_name);
        out.str(key!("awsRegion"), self.aws_region);
        match self.source {
            SourceOut::Address(address) => out.display(key!("sourceIPAddress"), address),
            SourceOut::Named(name) => out.str(key!("sourceIPAddress"), name),
        }
        out.str(key!("userAgent"), self.user_agent);
        out.opt_str(key!("errorCode"), self.error_code);
        out.opt_str(key!("errorMessage"), self.error_message);
        out.value(key!("requestParameters"), self.request_parameters);
        out.value(key!("responseElements"), self.response_elements);
        out.opt_str(key!("requestID"), self.request_id);
        out.str(
            key!("eventID"),
            self.event_id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()),
        );
        out.bool(key!("readOnly"), self.read_only);
        if !self.resources.is_empty() {
            out.objects(key!("resources"), self.resources, |o, resource| {
                o.str(key!("accountId"), &resource.account_id);
                o.str(key!("type"), &resource.resource_type);
                o.str(key!("ARN"), &resource.arn);
            });
        }
        out.str(key!("eventType"), self.event_type);
        out.bool(key!("managementEvent"), true);
        out.str(key!("recipientAccountId"), self.recipient_account_id);
        if let Some(shared) = self.shared_event_id {
            out.str(
                key!("sharedEventID"),
                shared.hyphenated().encode_lower(&mut Uuid::encode_buffer()),
            );
        }
        if let Some(details) = self.service_event_details {
            out.value(key!("serviceEventDetails"), Some(details));
        }
        out.str(key!("eventCategory"), "Management");
        out.close();
    }
}

/// Runs `f` with `time` as CloudTrail writes `eventTime` (`2026-11-22T20:54:32Z`). A
/// server writes many records within each second, so each thread keeps the text of the
/// last second it formatted.
fn with_iso8601_seconds<T>(time: Timestamp, f: impl FnOnce(&str) -> T) -> T {
    use std::cell::RefCell;
    use std::fmt::Write as _;
    thread_local! {
        static LAST: RefCell<(Option<i64>, String)> = const { RefCell::new((None, String::new())) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        let (second, text) = &mut *last;
        if *second != Some(time.secs()) {
            text.clear();
            let _ = write!(text, "{}", time.iso8601_seconds_display());
            *second = Some(time.secs());
        }
        f(text)
    })
}

/// A fresh event id in UUID (version 4) form, unique without a random draw per event: a
/// random 64-bit key per process and a counter mixed by a bijection (SplitMix64), so ids
/// never repeat within a process and collide across processes only if their random keys
/// do. Event ids are identifiers, not secrets.
pub fn new_event_id() -> Uuid {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (prefix, key) = *KEYS.get_or_init(|| {
        let mut bytes = [0u8; 16];
        if kura_crypto::fill_random(&mut bytes).is_err() {
            bytes = *uuid::Uuid::new_v4().as_bytes();
        }
        let (a, b) = bytes.split_at(8);
        (
            u64::from_le_bytes(a.try_into().unwrap_or_default()),
            u64::from_le_bytes(b.try_into().unwrap_or_default()),
        )
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let low = splitmix64(n ^ key);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&prefix.to_be_bytes());
    bytes[8..].copy_from_slice(&low.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// SplitMix64's finalizer: a bijection on 64-bit values that scatters consecutive inputs.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether an operation only reads, by AWS's naming conventions; for calls whose service
/// did not say (unknown operations, failures before the operation was recognised).
fn read_only_by_name(name: &str) -> bool {
    ["Describe", "Get", "List", "Lookup"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Whether the call only read (`readOnly`), as its record says.
pub fn is_read_only(event: &AuditEvent) -> bool {
    event
        .details
        .read_only
        .unwrap_or_else(|| read_only_by_name(&event.event_name))
}

/// Access-denied errors: a cross-account call refused for this reason is recorded only in
/// the caller's account.
fn is_access_denied(code: &str) -> bool {
    matches!(
        code,
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation"
    )
}

/// The records of one API call: one in the caller's account and, for cross-account use
/// that was not denied, one in each other account the service named, linked by a shared
/// event id.
pub fn api_call_entries(event: &AuditEvent) -> Vec<Entry> {
    let mut records = Records::default();
    api_call_records(event, &mut records);
    records.into_entries()
}

/// The other accounts that receive a copy of a call's record, each once: none when the
/// call was denied for want of access.
fn other_recipients(event: &AuditEvent) -> impl Iterator<Item = &str> {
    let caller_account = event.ctx.caller.principal.account.as_str();
    let denied = event
        .error
        .as_ref()
        .is_some_and(|e| is_access_denied(&e.code));
    let others = if denied {
        &[][..]
    } else {
        &event.details.also_deliver_to[..]
    };
    others.iter().enumerate().filter_map(move |(i, account)| {
        let repeated = account == caller_account || others[..i].contains(account);
        (!repeated).then_some(account.as_str())
    })
}

/// [`api_call_entries`], appended to `out`.
pub fn api_call_records(event: &AuditEvent, out: &mut Records) {
    let ctx = &event.ctx;
    let principal = &ctx.caller.principal;
    let caller_account = principal.account.as_str();
    let shared_event_id = other_recipients(event).next().map(|_| new_event_id());
    let request_parameters = scrubbed(event.details.request_parameters.as_ref());
    let response_elements = scrubbed(event.details.response_elements.as_ref());
    let recipients = std::iter::once(caller_account).chain(other_recipients(event));
    for recipient in recipients {
        let user_identity = if recipient == caller_account {
            caller_identity(event)
        } else {
            // The resource owner sees that another account called, not who in it.
            UserIdentityOut {
                kind: Some("AWSAccount"),
                principal_id: Some(&principal.user_id),
                account_id: caller_account,
                invoked_by: ctx.via_service,
                ..UserIdentityOut::default()
            }
        };
        let record = RecordOut {
            user_identity,
            event_time: ctx.time,
            event_source: event.event_source,
            event_name: &event.event_name,
            aws_region: ctx.region.as_str(),
            source: match ctx.via_service {
                Some(service) => SourceOut::Named(service),
                None => SourceOut::Address(ctx.source_ip),
            },
            user_agent: ctx.via_service.unwrap_or(ctx.user_agent.as_str()),
            error_code: event.error.as_ref().map(|e| e.code.as_ref()),
            error_message: event.error.as_ref().map(|e| e.message.as_str()),
            request_parameters: request_parameters.as_deref(),
            response_elements: response_elements.as_deref(),
            request_id: Some(&ctx.request_id),
            event_id: new_event_id(),
            read_only: is_read_only(event),
            resources: &event.details.resources,
            event_type: "AwsApiCall",
            recipient_account_id: recipient,
            shared_event_id,
            service_event_details: None,
        };
        out.push(&record, ctx.time.millis());
    }
}

fn caller_identity(event: &AuditEvent) -> UserIdentityOut<'_> {
    let caller = &event.ctx.caller;
    let principal = &caller.principal;
    let access_key_id = Some(caller.access_key_id.as_str()).filter(|k| !k.is_empty());
    let mut identity = UserIdentityOut {
        kind: Some(caller.identity_type.as_str()),
        principal_id: Some(&principal.user_id),
        arn: Some(&principal.arn),
        account_id: &principal.account,
        access_key_id,
        invoked_by: event.ctx.via_service,
        ..UserIdentityOut::default()
    };
    match caller.identity_type {
        IdentityType::IamUser => identity.user_name = principal.username.as_deref(),
        IdentityType::Root => {}
        IdentityType::AssumedRole => {
            identity.session_context = caller.session.as_ref().map(|issuer| SessionContextOut {
                issuer,
                account_id: &principal.account,
            });
        }
    }
    identity
}

/// The record of an event kura made on its own (CloudTrail's `AwsServiceEvent`).
pub fn service_event_entry(event: &ServiceEvent) -> Option<Entry> {
    let mut records = Records::default();
    service_event_records(event, &mut records);
    records.into_entries().pop()
}

/// [`service_event_entry`], appended to `out`.
pub fn service_event_records(event: &ServiceEvent, out: &mut Records) {
    let details = scrubbed(event.service_event_details.as_ref());
    let record = RecordOut {
        user_identity: UserIdentityOut {
            account_id: &event.account,
            invoked_by: Some(AWS_INTERNAL),
            ..UserIdentityOut::default()
        },
        event_time: event.time,
        event_source: event.event_source,
        event_name: &event.event_name,
        aws_region: event.region.as_str(),
        source: SourceOut::Named(AWS_INTERNAL),
        user_agent: AWS_INTERNAL,
        error_code: None,
        error_message: None,
        request_parameters: None,
        response_elements: None,
        request_id: None,
        event_id: new_event_id(),
        read_only: event.read_only,
        resources: &event.resources,
        event_type: "AwsServiceEvent",
        recipient_account_id: &event.account,
        shared_event_id: None,
        service_event_details: details.as_deref(),
    };
    out.push(&record, event.time.millis());
}

/// `value` with every secret member removed or hidden; borrowed when there is none (the
/// usual case, so the common path does not copy).
fn scrubbed(value: Option<&Value>) -> Option<Cow<'_, Value>> {
    let value = value?;
    if !contains_secret(value) {
        return Some(Cow::Borrowed(value));
    }
    let mut owned = value.clone();
    scrub(&mut owned);
    Some(Cow::Owned(owned))
}

/// `Some(true)` for a member to drop, `Some(false)` for one to hide, `None` for others.
/// (Compared in place, without a lowercase copy: every key of every record passes here.)
fn secret_kind(name: &str) -> Option<bool> {
    let listed = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(name));
    if listed(DROPPED_MEMBERS) {
        Some(true)
    } else if listed(HIDDEN_MEMBERS) {
        Some(false)
    } else {
        None
    }
}

fn contains_secret(value: &Value) -> bool {
    match value {
        Value::Object(members) => members
            .iter()
            .any(|(name, v)| secret_kind(name).is_some() || contains_secret(v)),
        Value::Array(items) => items.iter().any(contains_secret),
        _ => false,
    }
}

/// Removes plaintext and ciphertext members and hides secret ones, at any depth.
pub fn scrub(value: &mut Value) {
    match value {
        Value::Object(members) => {
            members.retain(|name, _| secret_kind(name) != Some(true));
            for (name, v) in members.iter_mut() {
                if secret_kind(name) == Some(false) {
                    *v = Value::String(HIDDEN.to_owned());
                } else {
                    scrub(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use kura_edge::{ApiError, AuditDetails, Caller, IdentityType, RequestContext, SessionIssuer};
    use kura_policy::{Principal, PrincipalKind};
    use kura_types::{Region, Timestamp};
    use serde_json::json;

    use super::*;

    pub(crate) fn user(account: &str, name: &str, key: &str) -> Arc<Caller> {
        Arc::new(Caller {
            principal: Principal {
                arn: format!("arn:aws:iam::{account}:user/{name}"),
                account: account.to_owned(),
                kind: PrincipalKind::User,
                user_id: format!("AIDA{name}"),
                username: Some(name.to_owned()),
            },
            identity_type: IdentityType::IamUser,
            access_key_id: key.to_owned(),
            session: None,
        })
    }

    pub(crate) fn event(caller: Arc<Caller>, name: &str, millis: i64) -> AuditEvent {
        AuditEvent {
            ctx: RequestContext {
                request_id: format!("req-{name}-{millis}"),
                caller,
                region: Region::parse("ap-northeast-1").unwrap(),
                source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                user_agent: "test-agent".to_owned(),
                time: Timestamp::from_millis(millis),
                via_service: None,
            },
            event_source: "kms.amazonaws.com",
            event_name: name.to_owned(),
            error: None,
            details: AuditDetails {
                request_parameters: Some(json!({"keyId": "alias/x"})),
                response_elements: None,
                resources: vec![AuditResource {
                    account_id: "111111111111".to_owned(),
                    resource_type: "AWS::KMS::Key".to_owned(),
                    arn: "arn:aws:kms:ap-northeast-1:111111111111:key/k1".to_owned(),
                }],
                read_only: Some(true),
                also_deliver_to: vec![],
            },
        }
    }

    fn parse(entry: &Entry) -> Value {
        assert_eq!(entry.digest, chain::record_digest(&entry.bytes));
        serde_json::from_slice(&entry.bytes).unwrap()
    }

    #[test]
    fn an_iam_user_call() {
        let e = event(
            user("111111111111", "alice", "AKIAALICE"),
            "Encrypt",
            1_700_000_000_123,
        );
        let entries = api_call_entries(&e);
        assert_eq!(entries.len(), 1);
        let r = parse(&entries[0]);
        assert_eq!(r["eventVersion"], "1.11");
        assert_eq!(
            r["userIdentity"],
            json!({"type": "IAMUser", "principalId": "AIDAalice",
                   "arn": "arn:aws:iam::111111111111:user/alice", "accountId": "111111111111",
                   "accessKeyId": "AKIAALICE", "userName": "alice"})
        );
        assert_eq!(r["eventTime"], "2023-11-14T22:13:20Z");
        assert_eq!(r["eventSource"], "kms.amazonaws.com");
        assert_eq!(r["eventName"], "Encrypt");
        assert_eq!(r["awsRegion"], "ap-northeast-1");
        assert_eq!(r["sourceIPAddress"], "127.0.0.1");
        assert_eq!(r["userAgent"], "test-agent");
        assert_eq!(r["requestParameters"], json!({"keyId": "alias/x"}));
        assert_eq!(r["responseElements"], Value::Null);
        assert_eq!(r["requestID"], "req-Encrypt-1700000000123");
        assert_eq!(r["eventID"].as_str().map(str::len), Some(36));
        assert_eq!(r["readOnly"], true);
        assert_eq!(r["resources"][0]["type"], "AWS::KMS::Key");
        assert_eq!(r["eventType"], "AwsApiCall");
        assert_eq!(r["managementEvent"], true);
        assert_eq!(r["recipientAccountId"], "111111111111");
        assert_eq!(r["eventCategory"], "Management");
        assert!(r.get("errorCode").is_none());
        assert!(r.get("sharedEventID").is_none());
        // CloudTrail's member order.
        let text = String::from_utf8(entries[0].bytes.clone()).unwrap();
        let order = [
            "eventVersion",
            "userIdentity",
            "eventTime",
            "eventSource",
            "eventName",
            "awsRegion",
            "sourceIPAddress",
            "userAgent",
            "requestParameters",
            "responseElements",
            "requestID",
            "eventID",
            "readOnly",
            "resources",
            "eventType",
            "managementEvent",
            "recipientAccountId",
            "eventCategory",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|m| text.find(&format!("\"{m}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn cross_account_use_is_recorded_in_both_accounts_unless_denied() {
        let mut e = event(user("222222222222", "bob", "AKIABOB"), "Decrypt", 0);
        e.details.also_deliver_to = vec!["111111111111".to_owned()];
        let entries = api_call_entries(&e);
        assert_eq!(entries.len(), 2);
        let (mine, theirs) = (parse(&entries[0]), parse(&entries[1]));
        assert_eq!(mine["recipientAccountId"], "222222222222");
        assert_eq!(theirs["recipientAccountId"], "111111111111");
        assert_eq!(mine["sharedEventID"], theirs["sharedEventID"]);
        assert!(mine["sharedEventID"].is_string());
        assert_ne!(mine["eventID"], theirs["eventID"]);
        assert_eq!(mine["requestID"], theirs["requestID"]);
        assert_eq!(mine["userIdentity"]["type"], "IAMUser");
        assert_eq!(
            theirs["userIdentity"],
            json!({"type": "AWSAccount", "principalId": "AIDAbob", "accountId": "222222222222"})
        );

        e.error = Some(ApiError::client(
            "AccessDeniedException",
            "User: x is not authorized",
        ));
        let entries = api_call_entries(&e);
        assert_eq!(entries.len(), 1);
        let r = parse(&entries[0]);
        assert_eq!(r["recipientAccountId"], "222222222222");
        assert_eq!(r["errorCode"], "AccessDeniedException");
        assert_eq!(r["errorMessage"], "User: x is not authorized");
        assert!(r.get("sharedEventID").is_none());

        // Other failures of cross-account calls still reach the key owner.
        e.error = Some(ApiError::client("DisabledException", "k is disabled."));
        assert_eq!(api_call_entries(&e).len(), 2);
    }

    #[test]
    fn assumed_roles_and_calls_through_a_service() {
        let caller = Arc::new(Caller {
            principal: Principal {
                arn: "arn:aws:sts::111111111111:assumed-role/Admin/s1".to_owned(),
                account: "111111111111".to_owned(),
                kind: PrincipalKind::AssumedRole {
                    role_arn: "arn:aws:iam::111111111111:role/Admin".to_owned(),
                    session_name: "s1".to_owned(),
                },
                user_id: "AROAADMIN:s1".to_owned(),
                username: None,
            },
            identity_type: IdentityType::AssumedRole,
            access_key_id: "ASIATEMP".to_owned(),
            session: Some(SessionIssuer {
                role_arn: "arn:aws:iam::111111111111:role/Admin".to_owned(),
                role_id: "AROAADMIN".to_owned(),
                role_name: "Admin".to_owned(),
                created: Timestamp::from_secs(1_700_000_000),
            }),
        });
        let mut e = event(caller, "GenerateDataKey", 0);
        e.ctx = e.ctx.on_behalf_via("rds.amazonaws.com");
        let r = parse(&api_call_entries(&e)[0]);
        let identity = &r["userIdentity"];
        assert_eq!(identity["type"], "AssumedRole");
        assert_eq!(identity["principalId"], "AROAADMIN:s1");
        assert!(identity.get("userName").is_none());
        assert_eq!(
            identity["sessionContext"],
            json!({"sessionIssuer": {"type": "Role", "principalId": "AROAADMIN",
                    "arn": "arn:aws:iam::111111111111:role/Admin", "accountId": "111111111111",
                    "userName": "Admin"},
                   "attributes": {"creationDate": "2023-11-14T22:13:20Z", "mfaAuthenticated": "false"}})
        );
        assert_eq!(identity["invokedBy"], "rds.amazonaws.com");
        assert_eq!(r["sourceIPAddress"], "rds.amazonaws.com");
        assert_eq!(r["userAgent"], "rds.amazonaws.com");
    }

    #[test]
    fn secrets_never_reach_a_record() {
        let mut e = event(user("111111111111", "alice", "AKIAALICE"), "Encrypt", 0);
        e.details.request_parameters = Some(json!({
            "keyId": "k", "Plaintext": "c2VjcmV0", "ciphertextBlob": "AQID",
            "nested": [{"masterUserPassword": "hunter2", "ok": 1}],
            "credentials": {"SessionToken": "tok", "secretAccessKey": "sak"}
        }));
        e.details.response_elements = Some(json!({"plaintext": "c2VjcmV0", "keyId": "k"}));
        let entry = &api_call_entries(&e)[0];
        let text = String::from_utf8(entry.bytes.clone()).unwrap();
        for secret in ["c2VjcmV0", "AQID", "hunter2", "\"tok\"", "\"sak\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let r = parse(entry);
        assert_eq!(r["requestParameters"]["keyId"], "k");
        assert_eq!(
            r["requestParameters"]["nested"][0]["masterUserPassword"],
            HIDDEN
        );
        assert_eq!(r["requestParameters"]["nested"][0]["ok"], 1);
        assert_eq!(
            r["requestParameters"]["credentials"]["SessionToken"],
            HIDDEN
        );
        assert_eq!(r["responseElements"], json!({"keyId": "k"}));
    }

    #[test]
    fn service_events() {
        let event = ServiceEvent {
            account: "111111111111".to_owned(),
            region: Region::parse("ap-northeast-1").unwrap(),
            time: Timestamp::from_secs(1_700_000_000),
            event_source: "kms.amazonaws.com",
            event_name: "RotateKey".to_owned(),
            resources: vec![],
            service_event_details: Some(json!({"keyId": "k1"})),
            read_only: false,
        };
        let r = parse(&service_event_entry(&event).unwrap());
        assert_eq!(
            r["userIdentity"],
            json!({"accountId": "111111111111", "invokedBy": "AWS Internal"})
        );
        assert_eq!(r["sourceIPAddress"], "AWS Internal");
        assert_eq!(r["userAgent"], "AWS Internal");
        assert_eq!(r["eventType"], "AwsServiceEvent");
        assert_eq!(r["requestParameters"], Value::Null);
        assert_eq!(r["serviceEventDetails"], json!({"keyId": "k1"}));
        assert!(r.get("requestID").is_none());
        assert_eq!(r["readOnly"], false);
    }

    #[test]
    fn event_ids_are_unique_uuids() {
        let ids: std::collections::HashSet<Uuid> = (0..10_000).map(|_| new_event_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            assert_eq!(id.get_version_num(), 4);
        }
    }

    #[test]
    fn read_only_is_inferred_when_the_service_did_not_say() {
        assert!(read_only_by_name("DescribeKey"));
        assert!(read_only_by_name("LookupEvents"));
        assert!(!read_only_by_name("CreateKey"));
    }
}
