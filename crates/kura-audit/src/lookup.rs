//! Finding events for LookupEvents: newest first, one account's events only.
//!
//! There is no separate index: segments are read newest first and their lines scanned
//! backwards. A byte search for the account's `"recipientAccountId":"…"` member skips
//! other accounts' records without parsing them, and one for the filter's value skips
//! records that cannot match; the remaining lines are parsed and filtered exactly. The newest events (what LookupEvents is used for) are found in the newest
//! segment, so a typical lookup reads one segment from the page cache. A lookup for a
//! rare value over a large trail reads every segment (see docs/audit.md).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use memchr::memmem;
use serde::Deserialize;

use crate::chain;
use crate::writer::SegmentView;

/// How far back (in event time) the scan goes past `StartTime` before it stops:
/// records are in commit order, and a call is committed at most this long after its
/// `eventTime`.
const TIME_SLACK_MILLIS: i64 = 5 * 60 * 1000;

/// The attributes LookupEvents can filter on (one per call, as on AWS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeKey {
    EventId,
    EventName,
    ReadOnly,
    Username,
    ResourceType,
    ResourceName,
    EventSource,
    AccessKeyId,
}

impl AttributeKey {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "EventId" => Self::EventId,
            "EventName" => Self::EventName,
            "ReadOnly" => Self::ReadOnly,
            "Username" => Self::Username,
            "ResourceType" => Self::ResourceType,
            "ResourceName" => Self::ResourceName,
            "EventSource" => Self::EventSource,
            "AccessKeyId" => Self::AccessKeyId,
            _ => return None,
        })
    }
}

/// One lookup.
#[derive(Debug, Clone)]
pub struct LookupQuery {
    /// Only events delivered to this account (`recipientAccountId`).
    pub account: String,
    /// Only events of this region (`awsRegion`), if set.
    pub region: Option<String>,
    pub attribute: Option<(AttributeKey, String)>,
    /// Inclusive bounds on `eventTime`, in milliseconds since the epoch.
    pub start_millis: Option<i64>,
    pub end_millis: Option<i64>,
    pub max_results: usize,
    /// Continue below this sequence number (from a NextToken).
    pub before_seq: Option<u64>,
}

/// A resource as LookupEvents shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundResource {
    pub resource_type: Option<String>,
    pub resource_name: String,
}

/// One event found.
#[derive(Debug, Clone)]
pub struct FoundEvent {
    pub seq: u64,
    pub event_id: String,
    pub event_name: String,
    pub read_only: Option<bool>,
    pub access_key_id: Option<String>,
    pub event_time_millis: i64,
    pub event_source: String,
    pub username: Option<String>,
    pub resources: Vec<FoundResource>,
    /// The whole record, as stored.
    pub record: String,
}

/// A page of results, newest first.
#[derive(Debug, Clone, Default)]
pub struct LookupPage {
    pub events: Vec<FoundEvent>,
    /// Whether older matching events remain (continue below the last event's `seq`).
    pub more: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct IdentityView {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    arn: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
}

#[derive(Deserialize)]
struct ResourceView {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(rename = "ARN", default)]
    arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordView {
    event_time: String,
    event_source: String,
    event_name: String,
    #[serde(default)]
    aws_region: Option<String>,
    recipient_account_id: String,
    #[serde(rename = "eventID")]
    event_id: String,
    #[serde(default)]
    read_only: Option<bool>,
    #[serde(default)]
    resources: Vec<ResourceView>,
    #[serde(default)]
    user_identity: IdentityView,
}

impl RecordView {
    /// LookupEvents' `Username`: the user name, `root`, or a role session's name.
    fn username(&self) -> Option<String> {
        let identity = &self.user_identity;
        match identity.kind.as_deref() {
            Some("IAMUser") => identity.user_name.clone(),
            Some("Root") => Some("root".to_owned()),
            Some("AssumedRole") => identity
                .arn
                .as_deref()
                .and_then(|arn| arn.rsplit('/').next())
                .map(str::to_owned),
            _ => identity.user_name.clone(),
        }
    }

    fn matches(&self, key: AttributeKey, value: &str) -> bool {
        match key {
            AttributeKey::EventId => self.event_id == value,
            AttributeKey::EventName => self.event_name == value,
            AttributeKey::EventSource => self.event_source == value,
            AttributeKey::ReadOnly => self
                .read_only
                .is_some_and(|ro| value.eq_ignore_ascii_case(if ro { "true" } else { "false" })),
            AttributeKey::Username => self.username().as_deref() == Some(value),
            AttributeKey::AccessKeyId => self.user_identity.access_key_id.as_deref() == Some(value),
            AttributeKey::ResourceType => self
                .resources
                .iter()
                .any(|r| r.kind.as_deref() == Some(value)),
            AttributeKey::ResourceName => self.resources.iter().any(|r| {
                r.arn.as_deref().is_some_and(|arn| {
                    arn == value || (!value.contains(':') && arn.rsplit('/').next() == Some(value))
                })
            }),
        }
    }
}

/// Bytes that a record matching `key = value` must contain, as stored (JSON-escaped):
/// lines without them are skipped without being parsed, which makes a lookup for a rare
/// value over a large trail several times faster. `None` where a match need not contain
/// the value (the user name `root` is derived from the identity's type).
fn value_needle(key: AttributeKey, value: &str) -> Option<Vec<u8>> {
    let escaped = || quoted(value).trim_matches('"').as_bytes().to_vec();
    match key {
        AttributeKey::ReadOnly => {
            Some(format!("\"readOnly\":{}", value.to_ascii_lowercase()).into_bytes())
        }
        AttributeKey::Username if value == "root" => None,
        _ if value.is_empty() => None,
        _ => Some(escaped()),
    }
}

/// Runs `query` over `segments` (oldest first, as the writer lists them).
pub(crate) fn lookup(segments: &[SegmentView], query: &LookupQuery) -> io::Result<LookupPage> {
    let needle = format!("\"recipientAccountId\":{}", quoted(&query.account));
    let finder = memmem::Finder::new(needle.as_bytes());
    let value_needle = query
        .attribute
        .as_ref()
        .and_then(|(key, value)| value_needle(*key, value));
    let value_finder = value_needle.as_deref().map(memmem::Finder::new);
    let finders = Finders {
        account: finder,
        value: value_finder,
        event_time: memmem::Finder::new(b"\"eventTime\":\""),
    };
    let mut page = LookupPage::default();
    for view in segments.iter().rev() {
        if view.end == 0 {
            continue;
        }
        let len = usize::try_from(view.end).unwrap_or(usize::MAX);
        let mut data = vec![0u8; len];
        match File::open(&view.path) {
            Ok(file) => file.read_exact_at(&mut data, 0)?,
            // Removed while we looked (an empty segment at start-up): nothing to read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        if scan_segment(&data, query, &finders, &mut page) {
            break;
        }
    }
    Ok(page)
}

/// Byte searches that rule lines out before they are parsed.
struct Finders<'a> {
    /// The account's `recipientAccountId` member.
    account: memmem::Finder<'a>,
    /// The filter's value (see [`value_needle`]).
    value: Option<memmem::Finder<'a>>,
    /// The `eventTime` member, to read a skipped line's time without parsing it.
    event_time: memmem::Finder<'a>,
}

/// A record's `eventTime` in milliseconds, read from its bytes (the member's value is a
/// plain `YYYY-MM-DDTHH:MM:SSZ` string).
fn event_time(record: &[u8], finder: &memmem::Finder<'_>) -> Option<i64> {
    let at = finder.find(record)? + finder.needle().len();
    let rest = record.get(at..)?;
    let end = memchr::memchr(b'"', rest)?;
    let text = std::str::from_utf8(rest.get(..end)?).ok()?;
    kura_types::Timestamp::parse_iso8601(text).map(|t| t.millis())
}

/// Scans one segment newest first; returns true when the lookup is complete.
fn scan_segment(
    data: &[u8],
    query: &LookupQuery,
    finders: &Finders<'_>,
    page: &mut LookupPage,
) -> bool {
    let mut end = data.len();
    while end > 0 {
        // `end` is just after a newline; the line is data[start..end-1].
        let line_end = end - 1;
        let start =
            memchr::memrchr(b'\n', data.get(..line_end).unwrap_or_default()).map_or(0, |i| i + 1);
        let line = data.get(start..line_end).unwrap_or_default();
        end = start;
        let Ok(line) = chain::parse_line(line) else {
            continue;
        };
        if query.before_seq.is_some_and(|before| line.seq >= before) {
            continue;
        }
        if finders.account.find(line.record).is_none() {
            continue;
        }
        if finders
            .value
            .as_ref()
            .is_some_and(|value| value.find(line.record).is_none())
        {
            // Not a match; but it may still be old enough to end the scan.
            if let Some(start_millis) = query.start_millis
                && event_time(line.record, &finders.event_time)
                    .is_some_and(|time| time < start_millis.saturating_sub(TIME_SLACK_MILLIS))
            {
                return true;
            }
            continue;
        }
        let Ok(record) = serde_json::from_slice::<RecordView>(line.record) else {
            continue;
        };
        if record.recipient_account_id != query.account {
            continue;
        }
        let Some(time) = kura_types::Timestamp::parse_iso8601(&record.event_time) else {
            continue;
        };
        let time = time.millis();
        if let Some(start_millis) = query.start_millis {
            if time < start_millis.saturating_sub(TIME_SLACK_MILLIS) {
                return true;
            }
            if time < start_millis {
                continue;
            }
        }
        if query.end_millis.is_some_and(|end_millis| time > end_millis) {
            continue;
        }
        if let Some(region) = &query.region
            && record.aws_region.as_deref().is_some_and(|r| r != region)
        {
            continue;
        }
        if let Some((key, value)) = &query.attribute
            && !record.matches(*key, value)
        {
            continue;
        }
        if page.events.len() >= query.max_results {
            page.more = true;
            return true;
        }
        page.events.push(FoundEvent {
            seq: line.seq,
            username: record.username(),
            event_id: record.event_id,
            event_name: record.event_name,
            read_only: record.read_only,
            access_key_id: record.user_identity.access_key_id,
            event_time_millis: time,
            event_source: record.event_source,
            resources: record
                .resources
                .into_iter()
                .filter_map(|r| {
                    Some(FoundResource {
                        resource_name: r.arn?,
                        resource_type: r.kind,
                    })
                })
                .collect(),
            record: String::from_utf8_lossy(line.record).into_owned(),
        });
    }
    false
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_match_always_contains_its_needle() {
        let needle =
            |key, value| value_needle(key, value).map(|n| String::from_utf8_lossy(&n).into_owned());
        assert_eq!(
            needle(AttributeKey::EventName, "CreateKey").as_deref(),
            Some("CreateKey")
        );
        assert_eq!(
            needle(AttributeKey::ReadOnly, "TRUE").as_deref(),
            Some("\"readOnly\":true")
        );
        // stored JSON escapes quotes and backslashes
        assert_eq!(
            needle(AttributeKey::Username, "a\"b\\c").as_deref(),
            Some("a\\\"b\\\\c")
        );
        // `root` is derived from the identity's type, not stored as a name
        assert_eq!(needle(AttributeKey::Username, "root"), None);
        assert_eq!(needle(AttributeKey::ResourceName, ""), None);
        let record = br#"{"eventTime":"2026-12-04T10:00:00Z","eventName":"Encrypt"}"#;
        let finder = memmem::Finder::new(b"\"eventTime\":\"");
        assert_eq!(
            event_time(record, &finder),
            kura_types::Timestamp::parse_iso8601("2026-12-04T10:00:00Z").map(|t| t.millis())
        );
        assert_eq!(event_time(b"{}", &finder), None);
    }
}
