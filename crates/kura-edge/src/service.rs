//! The contracts between the edge and the services behind it.

use async_trait::async_trait;

use kura_types::{Region, Timestamp};

use crate::{ApiError, RequestContext};

/// A service speaking the AWS JSON 1.1 protocol (`X-Amz-Target: <Prefix>.<Operation>`).
#[async_trait]
pub trait JsonService: Send + Sync + 'static {
    /// The `X-Amz-Target` prefix, e.g. `TrentService`.
    fn target_prefix(&self) -> &'static str;
    /// The SigV4 signing name, e.g. `kms`.
    fn signing_name(&self) -> &'static str;
    /// The CloudTrail event source, e.g. `kms.amazonaws.com`.
    fn event_source(&self) -> &'static str;
    /// Runs one operation on a JSON request body and returns the JSON response body.
    /// The service fills `audit` with what the audit record must say about the call.
    async fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
        audit: &mut AuditDetails,
    ) -> Result<Vec<u8>, ApiError>;
}

/// A service speaking the AWS Query protocol (`Action=…&Version=…`, XML responses).
#[async_trait]
pub trait QueryService: Send + Sync + 'static {
    /// The SigV4 signing name, e.g. `iam`; requests are routed by their credential scope.
    fn signing_name(&self) -> &'static str;
    fn event_source(&self) -> &'static str;
    /// The XML namespace of responses, e.g. `https://iam.amazonaws.com/doc/2010-05-08/`.
    fn xml_namespace(&self) -> &'static str;
    /// Global services (IAM) are signed for `us-east-1` by the SDKs whatever region the
    /// client is set to; they accept that scope as well as the server's own region.
    fn is_global(&self) -> bool {
        false
    }
    /// Runs one action and returns the inner XML of its `<ActionResult>` element (empty
    /// for actions whose response has no result).
    async fn call(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &QueryParams,
        audit: &mut AuditDetails,
    ) -> Result<String, ApiError>;
}

/// The decoded parameters of a Query request, in the order received.
#[derive(Debug, Default, Clone)]
pub struct QueryParams(pub Vec<(String, String)>);

impl QueryParams {
    /// Parameters from name/value pairs, in their order (tests and tools build requests
    /// this way; the edge decodes them from the request).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A resource an audited call touched (`resources[]` in a CloudTrail record).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditResource {
    #[serde(rename = "accountId")]
    pub account_id: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    #[serde(rename = "ARN")]
    pub arn: String,
}

/// What a service tells the audit trail about one call. Never holds plaintext, ciphertext
/// or secrets: services put only what CloudTrail would show.
#[derive(Clone, Debug, Default)]
pub struct AuditDetails {
    pub request_parameters: Option<serde_json::Value>,
    pub response_elements: Option<serde_json::Value>,
    pub resources: Vec<AuditResource>,
    /// Whether the operation only reads (`readOnly`); `None` if the service did not say.
    pub read_only: Option<bool>,
    /// Other accounts that receive a copy of the record (the key owner, for cross-account
    /// use of a KMS key).
    pub also_deliver_to: Vec<String>,
}

/// One finished, authenticated call, handed to the audit trail before the response is sent.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub ctx: RequestContext,
    pub event_source: &'static str,
    pub event_name: String,
    pub error: Option<ApiError>,
    pub details: AuditDetails,
}

/// An event that kura originates on its own, with no caller: KMS rotating a key on
/// schedule (`RotateKey`) or deleting a key whose waiting period ended (`DeleteKey`).
/// CloudTrail records these as `AwsServiceEvent`s invoked by `AWS Internal`.
#[derive(Clone, Debug)]
pub struct ServiceEvent {
    /// The account the event belongs to (the key owner).
    pub account: String,
    pub region: Region,
    pub time: Timestamp,
    /// e.g. `kms.amazonaws.com`.
    pub event_source: &'static str,
    /// e.g. `RotateKey`, `DeleteKey`.
    pub event_name: String,
    pub resources: Vec<AuditResource>,
    /// `serviceEventDetails`, e.g. `{"keyId": "1234abcd-..."}`.
    pub service_event_details: Option<serde_json::Value>,
    pub read_only: bool,
}

/// Where audit events go. A failure to record fails the call (the caller sees a server
/// error), so no acknowledged call is ever missing from the trail.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    async fn record(&self, event: AuditEvent) -> Result<(), ApiError>;

    /// Records an event kura made on its own ([`ServiceEvent`]). The default only logs it,
    /// for sinks that keep no trail.
    async fn record_service_event(&self, event: ServiceEvent) -> Result<(), ApiError> {
        tracing::debug!(
            account = %event.account,
            event = %event.event_name,
            source = event.event_source,
            "audit service event"
        );
        Ok(())
    }
}

/// An audit sink that only writes a structured log line.
pub struct LogAuditSink;

#[async_trait]
impl AuditSink for LogAuditSink {
    async fn record(&self, event: AuditEvent) -> Result<(), ApiError> {
        tracing::debug!(
            request_id = %event.ctx.request_id,
            caller = %event.ctx.caller.principal.arn,
            event = %event.event_name,
            source = event.event_source,
            error = event.error.as_ref().map(|e| e.code.as_ref()),
            "audit"
        );
        Ok(())
    }
}
