//! The CloudTrail API (JSON 1.1, `CloudTrail_20131101.*`, signing name `cloudtrail`):
//! `LookupEvents` over the trail, and `ListPublicKeys` (the digest verification key).
//! Every other CloudTrail operation answers `UnsupportedOperationException`.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use kura_edge::{ApiError, AuditDetails, JsonService, RequestContext};
use kura_policy::{AuthzRequest, PolicyDocument, Principal};
use serde_json::{Map, Value, json};

use crate::AuditTrail;
use crate::lookup::{AttributeKey, FoundEvent, LookupQuery};

const DEFAULT_MAX_RESULTS: i64 = 50;
const LOOKUP_ACTION: &str = "cloudtrail:LookupEvents";

/// The CloudTrail operations AWS defines (API version 2013-11-01).
const OPERATIONS: &[&str] = &[
    "AddTags",
    "CancelQuery",
    "CreateChannel",
    "CreateDashboard",
    "CreateEventDataStore",
    "CreateTrail",
    "DeleteChannel",
    "DeleteDashboard",
    "DeleteEventDataStore",
    "DeleteResourcePolicy",
    "DeleteTrail",
    "DeregisterOrganizationDelegatedAdmin",
    "DescribeQuery",
    "DescribeTrails",
    "DisableFederation",
    "EnableFederation",
    "GenerateQuery",
    "GetChannel",
    "GetDashboard",
    "GetEventConfiguration",
    "GetEventDataStore",
    "GetEventSelectors",
    "GetImport",
    "GetInsightSelectors",
    "GetQueryResults",
    "GetResourcePolicy",
    "GetTrail",
    "GetTrailStatus",
    "ListChannels",
    "ListDashboards",
    "ListEventDataStores",
    "ListImportFailures",
    "ListImports",
    "ListInsightsData",
    "ListInsightsMetricData",
    "ListPublicKeys",
    "ListQueries",
    "ListTags",
    "ListTrails",
    "LookupEvents",
    "PutEventConfiguration",
    "PutEventSelectors",
    "PutInsightSelectors",
    "PutResourcePolicy",
    "RegisterOrganizationDelegatedAdmin",
    "RemoveTags",
    "RestoreEventDataStore",
    "SearchSampleQueries",
    "StartDashboardRefresh",
    "StartEventDataStoreIngestion",
    "StartImport",
    "StartLogging",
    "StartQuery",
    "StopEventDataStoreIngestion",
    "StopImport",
    "StopLogging",
    "UpdateChannel",
    "UpdateDashboard",
    "UpdateEventDataStore",
    "UpdateTrail",
];

/// Where the identity policies of a caller come from (the IAM service, in the binary).
pub trait IdentityPolicies: Send + Sync + 'static {
    fn identity_policies(&self, principal: &Principal) -> Vec<Arc<PolicyDocument>>;
}

impl<F> IdentityPolicies for F
where
    F: Fn(&Principal) -> Vec<Arc<PolicyDocument>> + Send + Sync + 'static,
{
    fn identity_policies(&self, principal: &Principal) -> Vec<Arc<PolicyDocument>> {
        self(principal)
    }
}

/// Wraps a closure as the source of identity policies (the closure's argument type is
/// inferred from this signature).
pub fn identity_policies_fn<F>(f: F) -> Arc<dyn IdentityPolicies>
where
    F: Fn(&Principal) -> Vec<Arc<PolicyDocument>> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// The CloudTrail service.
pub struct CloudTrail {
    trail: Arc<AuditTrail>,
    policies: Arc<dyn IdentityPolicies>,
}

impl CloudTrail {
    pub fn new(trail: Arc<AuditTrail>, policies: Arc<dyn IdentityPolicies>) -> Self {
        Self { trail, policies }
    }

    fn authorize(&self, ctx: &RequestContext, action: &str) -> Result<(), ApiError> {
        let principal = &ctx.caller.principal;
        let context = kura_iam::base_context(ctx);
        let request = AuthzRequest {
            principal,
            action,
            resource: "*",
            context: &context,
        };
        let policies = self.policies.identity_policies(principal);
        kura_iam::authorize_identity(&policies, &request)
            .map_err(|message| ApiError::client("AccessDeniedException", message))
    }

    async fn lookup_events(&self, ctx: &RequestContext, body: &Value) -> Result<Vec<u8>, ApiError> {
        self.authorize(ctx, LOOKUP_ACTION)?;
        let Some(request) = parse_lookup(ctx, body)? else {
            // EventCategory=insight: kura records no Insights events.
            return Ok(b"{\"Events\":[]}".to_vec());
        };
        let trail = self.trail.clone();
        let query = request.query.clone();
        let page = tokio::task::spawn_blocking(move || trail.lookup(&query))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "LookupEvents task failed");
                ApiError::internal("InternalFailure")
            })?
            .map_err(|e| {
                tracing::error!(error = %e, "LookupEvents cannot read the trail");
                ApiError::internal("InternalFailure")
            })?;
        let events: Vec<Value> = page.events.iter().map(render_event).collect();
        let mut response = Map::new();
        response.insert("Events".into(), Value::Array(events));
        if page.more
            && let Some(last) = page.events.last()
        {
            response.insert(
                "NextToken".into(),
                Value::String(next_token(last.seq, &request.fingerprint)),
            );
        }
        serde_json::to_vec(&Value::Object(response)).map_err(|e| {
            tracing::error!(error = %e, "encoding a LookupEvents response");
            ApiError::internal("InternalFailure")
        })
    }
}

impl CloudTrail {
    /// The key that verifies the trail's digests, as `ListPublicKeys` shows it: the DER
    /// `SubjectPublicKeyInfo` of the Ed25519 key (CloudTrail's keys are RSA; the shape is
    /// the same) and its fingerprint.
    fn list_public_keys(&self) -> Vec<u8> {
        const ED25519_SPKI_PREFIX: [u8; 12] = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.trail.public_key());
        let body = json!({"PublicKeyList": [{
            "Value": base64::engine::general_purpose::STANDARD.encode(der),
            "Fingerprint": self.trail.fingerprint(),
        }]});
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[async_trait]
impl JsonService for CloudTrail {
    fn target_prefix(&self) -> &'static str {
        "CloudTrail_20131101"
    }

    fn signing_name(&self) -> &'static str {
        "cloudtrail"
    }

    fn event_source(&self) -> &'static str {
        "cloudtrail.amazonaws.com"
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
        audit: &mut AuditDetails,
    ) -> Result<Vec<u8>, ApiError> {
        match operation {
            "LookupEvents" => {
                audit.read_only = Some(true);
                let body = parse_body(body)?;
                audit.request_parameters = Some(lower_camel_keys(&body));
                self.lookup_events(ctx, &body).await
            }
            "ListPublicKeys" => {
                audit.read_only = Some(true);
                let body = parse_body(body)?;
                audit.request_parameters = Some(lower_camel_keys(&body));
                self.authorize(ctx, "cloudtrail:ListPublicKeys")?;
                Ok(self.list_public_keys())
            }
            known if OPERATIONS.contains(&known) => Err(ApiError::client(
                "UnsupportedOperationException",
                format!(
                    "kura's CloudTrail implements LookupEvents and ListPublicKeys over its built-in trail; {known} is not supported."
                ),
            )),
            _ => Err(ApiError::client("UnknownOperationException", "")),
        }
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(ApiError::client(
            "SerializationException",
            "The request body must be a JSON object.",
        )),
    }
}

/// A validated LookupEvents request.
struct LookupRequest {
    query: LookupQuery,
    /// Identifies the filter, so a NextToken is only accepted with the same one.
    fingerprint: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::client(code, message)
}

/// Validates a LookupEvents request; `None` for `EventCategory=insight`.
fn parse_lookup(ctx: &RequestContext, body: &Value) -> Result<Option<LookupRequest>, ApiError> {
    match body.get("EventCategory") {
        None | Some(Value::Null) => {}
        Some(Value::String(category)) if category == "insight" => return Ok(None),
        Some(other) => {
            return Err(invalid(
                "InvalidEventCategoryException",
                format!("EventCategory {other} is not valid; the only valid value is insight."),
            ));
        }
    }
    let attribute = match body.get("LookupAttributes") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.is_empty() => None,
        Some(Value::Array(items)) if items.len() == 1 => Some(parse_attribute(&items[0])?),
        Some(Value::Array(_)) => {
            return Err(invalid(
                "InvalidLookupAttributesException",
                "You can specify only one lookup attribute.",
            ));
        }
        Some(_) => {
            return Err(invalid(
                "InvalidLookupAttributesException",
                "LookupAttributes must be a list.",
            ));
        }
    };
    let start_millis = parse_time(body.get("StartTime"), "StartTime")?;
    let end_millis = parse_time(body.get("EndTime"), "EndTime")?;
    if let (Some(start), Some(end)) = (start_millis, end_millis)
        && start > end
    {
        return Err(invalid(
            "InvalidTimeRangeException",
            "The start time must be before or equal to the end time.",
        ));
    }
    let max_results = match body.get("MaxResults") {
        None | Some(Value::Null) => DEFAULT_MAX_RESULTS,
        Some(value) => match value.as_i64() {
            Some(n) if (1..=50).contains(&n) => n,
            _ => {
                return Err(invalid(
                    "InvalidMaxResultsException",
                    "MaxResults must be between 1 and 50.",
                ));
            }
        },
    };
    let account = ctx.caller.principal.account.clone();
    let fingerprint = {
        let text = serde_json::to_string(&json!([
            account,
            attribute
                .as_ref()
                .map(|(k, v)| (format!("{k:?}"), v.clone())),
            start_millis,
            end_millis
        ]))
        .unwrap_or_default();
        hex::encode(&kura_crypto::sha256(text.as_bytes())[..8])
    };
    let before_seq = match body.get("NextToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(parse_next_token(token, &fingerprint)?),
        Some(_) => {
            return Err(invalid(
                "InvalidNextTokenException",
                "NextToken is not valid.",
            ));
        }
    };
    Ok(Some(LookupRequest {
        query: LookupQuery {
            account,
            region: Some(ctx.region.to_string()),
            attribute,
            start_millis,
            end_millis,
            max_results: usize::try_from(max_results).unwrap_or(50),
            before_seq,
        },
        fingerprint,
    }))
}

fn parse_attribute(item: &Value) -> Result<(AttributeKey, String), ApiError> {
    let key = item.get("AttributeKey").and_then(Value::as_str);
    let value = item.get("AttributeValue").and_then(Value::as_str);
    match (key, value) {
        (Some(key), Some(value)) => {
            let parsed = AttributeKey::parse(key).ok_or_else(|| {
                invalid(
                    "InvalidLookupAttributesException",
                    format!(
                        "AttributeKey {key} is not valid; valid keys are EventId, EventName, ReadOnly, Username, ResourceType, ResourceName, EventSource and AccessKeyId."
                    ),
                )
            })?;
            if value.is_empty() || value.chars().count() > 2000 {
                return Err(invalid(
                    "InvalidLookupAttributesException",
                    "AttributeValue must be 1 to 2000 characters long.",
                ));
            }
            Ok((parsed, value.to_owned()))
        }
        _ => Err(invalid(
            "InvalidLookupAttributesException",
            "Each lookup attribute needs an AttributeKey and an AttributeValue.",
        )),
    }
}

/// A JSON 1.1 timestamp: epoch seconds (number or numeric string) or ISO 8601.
fn parse_time(value: Option<&Value>, name: &str) -> Result<Option<i64>, ApiError> {
    let bad = || {
        invalid(
            "InvalidTimeRangeException",
            format!("{name} is not a valid timestamp."),
        )
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let secs = n.as_f64().ok_or_else(bad)?;
            if !secs.is_finite() || secs.abs() > 1e13 {
                return Err(bad());
            }
            Ok(Some((secs * 1000.0).round() as i64))
        }
        Some(Value::String(text)) => {
            if let Ok(secs) = text.parse::<f64>() {
                return parse_time(
                    serde_json::Number::from_f64(secs)
                        .map(Value::Number)
                        .as_ref(),
                    name,
                );
            }
            kura_types::Timestamp::parse_iso8601(text)
                .map(|t| Some(t.millis()))
                .ok_or_else(bad)
        }
        Some(_) => Err(bad()),
    }
}

fn next_token(seq: u64, fingerprint: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("1:{seq}:{fingerprint}"))
}

fn parse_next_token(token: &str, fingerprint: &str) -> Result<u64, ApiError> {
    let bad = || invalid("InvalidNextTokenException", "NextToken is not valid.");
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ':');
    let (Some("1"), Some(seq), Some(print)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if print != fingerprint {
        return Err(invalid(
            "InvalidNextTokenException",
            "The NextToken was issued for a request with other parameters; repeat the original parameters with it.",
        ));
    }
    seq.parse().map_err(|_| bad())
}

fn render_event(event: &FoundEvent) -> Value {
    let mut out = Map::new();
    out.insert("EventId".into(), event.event_id.clone().into());
    out.insert("EventName".into(), event.event_name.clone().into());
    if let Some(read_only) = event.read_only {
        out.insert("ReadOnly".into(), read_only.to_string().into());
    }
    if let Some(key) = &event.access_key_id {
        out.insert("AccessKeyId".into(), key.clone().into());
    }
    out.insert(
        "EventTime".into(),
        json!(event.event_time_millis.div_euclid(1000)),
    );
    out.insert("EventSource".into(), event.event_source.clone().into());
    if let Some(username) = &event.username {
        out.insert("Username".into(), username.clone().into());
    }
    let resources: Vec<Value> = event
        .resources
        .iter()
        .map(|r| {
            let mut resource = Map::new();
            if let Some(kind) = &r.resource_type {
                resource.insert("ResourceType".into(), kind.clone().into());
            }
            resource.insert("ResourceName".into(), r.resource_name.clone().into());
            Value::Object(resource)
        })
        .collect();
    out.insert("Resources".into(), Value::Array(resources));
    out.insert("CloudTrailEvent".into(), event.record.clone().into());
    Value::Object(out)
}

/// The request as CloudTrail shows it in `requestParameters`: member names in lower
/// camel case.
fn lower_camel_keys(value: &Value) -> Value {
    match value {
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(k, v)| (lower_camel(k), lower_camel_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(lower_camel_keys).collect()),
        other => other.clone(),
    }
}

fn lower_camel(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn next_tokens_are_bound_to_their_query() {
        let token = next_token(42, "abcd");
        assert_eq!(parse_next_token(&token, "abcd").ok(), Some(42));
        assert_eq!(
            parse_next_token(&token, "ffff").err().map(|e| e.code),
            Some("InvalidNextTokenException".into())
        );
        assert!(parse_next_token("garbage!", "abcd").is_err());
    }

    #[test]
    fn times_parse_in_every_json_form() {
        assert_eq!(parse_time(Some(&json!(1.5)), "T").unwrap(), Some(1500));
        assert_eq!(parse_time(Some(&json!("2")), "T").unwrap(), Some(2000));
        assert_eq!(
            parse_time(Some(&json!("1970-01-01T00:00:03Z")), "T").unwrap(),
            Some(3000)
        );
        assert!(parse_time(Some(&json!("yesterday")), "T").is_err());
        assert!(parse_time(Some(&json!(true)), "T").is_err());
        assert_eq!(parse_time(None, "T").unwrap(), None);
    }

    #[test]
    fn request_parameters_use_lower_camel_case() {
        let shown = lower_camel_keys(
            &json!({"LookupAttributes": [{"AttributeKey": "EventName"}], "MaxResults": 5}),
        );
        assert_eq!(
            shown,
            json!({"lookupAttributes": [{"attributeKey": "EventName"}], "maxResults": 5})
        );
    }
}
