//! The HTTP listener and the life of one request:
//!
//! ```text
//! accept ─► read body (bounded) ─► detect protocol ─► SigV4 ─► service.call ─► audit ─► respond
//!              │                      │ X-Amz-Target → JSON 1.1
//!              │                      │ Action=      → Query
//!              └─ GET /_kura/health, GET /metrics are answered before any of this
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use kura_types::{Clock, Region};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::context::{Caller, Credential, CredentialResolver, RequestContext};
use crate::service::{AuditDetails, AuditEvent, AuditSink, JsonService, QueryParams, QueryService};
use crate::sigv4::{self, RequestParts, SigV4Error, SignatureClaim};
use crate::{ApiError, Metrics};

/// Largest request body accepted. The biggest legitimate KMS request is a key policy of
/// 131,072 characters, which JSON escaping can grow several times.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The region SDKs sign requests to global services (IAM) for.
const GLOBAL_SIGNING_REGION: &str = "us-east-1";

/// Everything the edge needs to serve requests. Built once at startup.
pub struct Edge {
    region: Region,
    clock: Arc<dyn Clock>,
    credentials: Arc<dyn CredentialResolver>,
    audit: Arc<dyn AuditSink>,
    json_services: HashMap<&'static str, Arc<dyn JsonService>>,
    query_services: HashMap<&'static str, Arc<dyn QueryService>>,
    metrics: Metrics,
    signing_keys: SigningKeyCache,
}

/// Builder for [`Edge`].
pub struct EdgeBuilder {
    edge: Edge,
}

impl EdgeBuilder {
    pub fn json_service(mut self, service: Arc<dyn JsonService>) -> Self {
        self.edge
            .json_services
            .insert(service.target_prefix(), service);
        self
    }

    pub fn query_service(mut self, service: Arc<dyn QueryService>) -> Self {
        self.edge
            .query_services
            .insert(service.signing_name(), service);
        self
    }

    pub fn audit(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.edge.audit = audit;
        self
    }

    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.edge.metrics = metrics;
        self
    }

    pub fn build(self) -> Arc<Edge> {
        Arc::new(self.edge)
    }
}

/// Which wire protocol a request speaks, decided from its shape.
enum Protocol {
    Json { prefix: String, operation: String },
    Query { params: QueryParams },
}

/// Why authentication failed, before it is rendered in the caller's protocol.
enum AuthFailure {
    Signature(SigV4Error),
    UnknownAccessKey,
    InvalidToken,
    ExpiredToken,
}

impl Edge {
    pub fn builder(
        region: Region,
        clock: Arc<dyn Clock>,
        credentials: Arc<dyn CredentialResolver>,
    ) -> EdgeBuilder {
        EdgeBuilder {
            edge: Edge {
                region,
                clock,
                credentials,
                audit: Arc::new(crate::service::LogAuditSink),
                json_services: HashMap::new(),
                query_services: HashMap::new(),
                metrics: Metrics::new(),
                signing_keys: SigningKeyCache::default(),
            },
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serves one HTTP request. Never fails: every problem becomes an AWS error response.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        if request.method() == Method::GET {
            match request.uri().path() {
                "/_kura/health" => {
                    return plain(StatusCode::OK, "application/json", "{\"status\":\"ok\"}\n");
                }
                "/metrics" => {
                    return plain(
                        StatusCode::OK,
                        "text/plain; version=0.0.4",
                        &self.metrics.render(),
                    );
                }
                _ => {}
            }
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                let error = ApiError::new(
                    "RequestEntityTooLarge",
                    413,
                    format!("Request body must be at most {MAX_BODY_BYTES} bytes."),
                );
                return self.error_response(&parts.headers, &request_id, &error);
            }
        };
        let request_parts = RequestParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or_default(),
            headers: &parts.headers,
            body: &body,
        };
        match self.detect_protocol(&request_parts) {
            Ok(Protocol::Json { prefix, operation }) => {
                self.serve_json(
                    &request_parts,
                    remote,
                    request_id,
                    &prefix,
                    &operation,
                    started,
                )
                .await
            }
            Ok(Protocol::Query { params }) => {
                self.serve_query(&request_parts, remote, request_id, params, started)
                    .await
            }
            Err(error) => self.error_response(&parts.headers, &request_id, &error),
        }
    }

    fn detect_protocol(&self, parts: &RequestParts<'_>) -> Result<Protocol, ApiError> {
        if let Some(target) = parts.headers.get("x-amz-target") {
            let target = target.to_str().unwrap_or_default();
            // SDKs send either `Prefix.Operation` or a namespaced prefix such as
            // `com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents`.
            let Some((prefix, operation)) = target.rsplit_once('.') else {
                return Err(ApiError::client("UnknownOperationException", ""));
            };
            return Ok(Protocol::Json {
                prefix: prefix.to_owned(),
                operation: operation.to_owned(),
            });
        }
        let is_form = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let mut params: Vec<(String, String)> = sigv4::decode_query(parts.query);
        if is_form {
            params.extend(form_urlencoded::parse(parts.body).into_owned());
        }
        // Presigned-URL parameters authenticate the request; they are not API parameters.
        params.retain(|(k, _)| !k.starts_with("X-Amz-"));
        if params.iter().any(|(k, _)| k == "Action") {
            Ok(Protocol::Query {
                params: QueryParams(params),
            })
        } else {
            Err(ApiError::client(
                "MissingAction",
                "Could not find operation to perform: neither an X-Amz-Target header nor an Action parameter was given.",
            ))
        }
    }

    async fn serve_json(
        &self,
        parts: &RequestParts<'_>,
        remote: SocketAddr,
        request_id: String,
        prefix: &str,
        operation: &str,
        started: Instant,
    ) -> Response<Full<Bytes>> {
        let short_prefix = prefix.rsplit_once('.').map_or(prefix, |(_, short)| short);
        let Some(service) = self
            .json_services
            .get(prefix)
            .or_else(|| self.json_services.get(short_prefix))
            .cloned()
        else {
            let error = ApiError::client("UnknownOperationException", "");
            return json_error(&request_id, &error);
        };
        let caller = match self.authenticate(parts, service.signing_name()) {
            Ok(caller) => caller,
            Err(failure) => return json_error(&request_id, &json_auth_error(failure)),
        };
        let ctx = self.context(parts.headers, remote, request_id, caller);
        let mut audit = AuditDetails::default();
        let body = if parts.body.is_empty() {
            b"{}".as_slice()
        } else {
            parts.body
        };
        let outcome = service.call(&ctx, operation, body, &mut audit).await;
        let outcome = self
            .finish_call(
                ctx.clone(),
                service.event_source(),
                operation,
                audit,
                outcome,
            )
            .await;
        self.observe(service.signing_name(), operation, &outcome, started);
        match outcome {
            Ok(body) => json_response(&ctx.request_id, body),
            Err(error) => json_error(&ctx.request_id, &error),
        }
    }

    async fn serve_query(
        &self,
        parts: &RequestParts<'_>,
        remote: SocketAddr,
        request_id: String,
        params: QueryParams,
        started: Instant,
    ) -> Response<Full<Bytes>> {
        let claim = match sigv4::parse_claim(parts) {
            Ok(claim) => claim,
            Err(e) => return xml_error(&request_id, &query_auth_error(AuthFailure::Signature(e))),
        };
        let Some(service) = self.query_services.get(claim.service.as_str()).cloned() else {
            let error = ApiError::client(
                "InvalidAction",
                format!(
                    "This kura server does not serve the '{}' service.",
                    claim.service
                ),
            );
            return xml_error(&request_id, &error);
        };
        let scope_region = if service.is_global() && claim.region == GLOBAL_SIGNING_REGION {
            GLOBAL_SIGNING_REGION
        } else {
            self.region.as_str()
        };
        let caller = match self.verify_claim(parts, &claim, scope_region, service.signing_name()) {
            Ok(caller) => caller,
            Err(failure) => return xml_error(&request_id, &query_auth_error(failure)),
        };
        let action = params.get("Action").unwrap_or_default().to_owned();
        let ctx = self.context(parts.headers, remote, request_id, caller);
        let mut audit = AuditDetails::default();
        let outcome = service.call(&ctx, &action, &params, &mut audit).await;
        let outcome = self
            .finish_call(ctx.clone(), service.event_source(), &action, audit, outcome)
            .await;
        self.observe(service.signing_name(), &action, &outcome, started);
        match outcome {
            Ok(result) => xml_response(&ctx.request_id, service.xml_namespace(), &action, &result),
            Err(error) => xml_error(&ctx.request_id, &error),
        }
    }

    /// Records the call in the audit trail. If the trail cannot take it, the call fails:
    /// an unaudited success must never reach the caller.
    async fn finish_call<T>(
        &self,
        ctx: RequestContext,
        event_source: &'static str,
        operation: &str,
        details: AuditDetails,
        outcome: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if let Err(error) = &outcome
            && error.is_server_fault()
        {
            tracing::error!(request_id = %ctx.request_id, operation, code = %error.code, "request failed");
        }
        let event = AuditEvent {
            ctx,
            event_source,
            event_name: operation.to_owned(),
            error: outcome.as_ref().err().cloned(),
            details,
        };
        let request_id = event.ctx.request_id.clone();
        match self.audit.record(event).await {
            Ok(()) => outcome,
            Err(error) => {
                tracing::error!(request_id = %request_id, %error, "audit trail refused a record");
                Err(error)
            }
        }
    }

    fn observe<T>(
        &self,
        service: &str,
        operation: &str,
        outcome: &Result<T, ApiError>,
        started: Instant,
    ) {
        let (operation, code) = match outcome {
            Ok(_) => (operation, "ok"),
            // Unknown operation names come from the client; never let them become labels.
            Err(e)
                if matches!(
                    e.code.as_ref(),
                    "UnknownOperationException" | "InvalidAction"
                ) =>
            {
                ("unknown", e.code.as_ref())
            }
            Err(e) => (operation, e.code.as_ref()),
        };
        self.metrics
            .observe(service, operation, code, started.elapsed());
    }

    fn context(
        &self,
        headers: &HeaderMap,
        remote: SocketAddr,
        request_id: String,
        caller: Arc<Caller>,
    ) -> RequestContext {
        RequestContext {
            request_id,
            caller,
            region: self.region.clone(),
            source_ip: remote.ip(),
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            time: self.clock.now(),
            via_service: None,
        }
    }

    fn authenticate(
        &self,
        parts: &RequestParts<'_>,
        service: &str,
    ) -> Result<Arc<Caller>, AuthFailure> {
        let claim = sigv4::parse_claim(parts).map_err(AuthFailure::Signature)?;
        self.verify_claim(parts, &claim, self.region.as_str(), service)
    }

    fn verify_claim(
        &self,
        parts: &RequestParts<'_>,
        claim: &SignatureClaim,
        scope_region: &str,
        service: &str,
    ) -> Result<Arc<Caller>, AuthFailure> {
        let credential = self
            .credentials
            .resolve(&claim.access_key_id)
            .ok_or(AuthFailure::UnknownAccessKey)?;
        claim
            .check_scope(scope_region, service)
            .map_err(AuthFailure::Signature)?;
        let now = self.clock.now();
        claim.check_time(now).map_err(AuthFailure::Signature)?;
        let key = self.signing_keys.get(&credential, claim);
        let to_sign = sigv4::string_to_sign(parts, claim).map_err(AuthFailure::Signature)?;
        sigv4::verify_signature(claim, &key, &to_sign).map_err(AuthFailure::Signature)?;
        check_session_token(&credential, claim, now)?;
        Ok(credential.caller.clone())
    }
}

fn check_session_token(
    credential: &Credential,
    claim: &SignatureClaim,
    now: kura_types::Timestamp,
) -> Result<(), AuthFailure> {
    match (&credential.session_token, &claim.security_token) {
        (None, None) => Ok(()),
        (Some(expected), Some(given)) => {
            if !kura_crypto::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
                return Err(AuthFailure::InvalidToken);
            }
            match credential.expires {
                Some(expires) if now >= expires => Err(AuthFailure::ExpiredToken),
                _ => Ok(()),
            }
        }
        _ => Err(AuthFailure::InvalidToken),
    }
}

/// Signing keys change once a day per access key and scope; deriving one costs four
/// HMACs, so they are cached. An entry is reused only while the credential it was derived
/// from is still the one the resolver returns (a replaced or deleted key invalidates it).
#[derive(Default)]
struct SigningKeyCache {
    entries: Mutex<HashMap<String, CachedSigningKey>>,
}

/// A derived signing key and the credential it was derived from.
struct CachedSigningKey {
    source: Weak<Credential>,
    key: [u8; 32],
}

const SIGNING_KEY_CACHE_LIMIT: usize = 10_000;

impl SigningKeyCache {
    fn get(&self, credential: &Arc<Credential>, claim: &SignatureClaim) -> [u8; 32] {
        let cache_key = format!("{}/{}", claim.access_key_id, claim.scope());
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = entries
            .get(&cache_key)
            .filter(|cached| std::ptr::eq(cached.source.as_ptr(), Arc::as_ptr(credential)))
        {
            return cached.key;
        }
        let key = sigv4::signing_key(
            credential.secret.expose(),
            &claim.scope_date,
            &claim.region,
            &claim.service,
        );
        if entries.len() >= SIGNING_KEY_CACHE_LIMIT {
            entries.clear();
        }
        entries.insert(
            cache_key,
            CachedSigningKey {
                source: Arc::downgrade(credential),
                key,
            },
        );
        key
    }
}

fn json_auth_error(failure: AuthFailure) -> ApiError {
    const INVALID_TOKEN: &str = "The security token included in the request is invalid.";
    match failure {
        AuthFailure::Signature(SigV4Error::Missing) => ApiError::new(
            "MissingAuthenticationTokenException",
            403,
            "Missing Authentication Token",
        ),
        AuthFailure::Signature(SigV4Error::Incomplete(m)) => {
            ApiError::client("IncompleteSignatureException", m)
        }
        AuthFailure::Signature(SigV4Error::Invalid(m) | SigV4Error::Expired(m)) => {
            ApiError::client("InvalidSignatureException", m)
        }
        AuthFailure::UnknownAccessKey | AuthFailure::InvalidToken => {
            ApiError::client("UnrecognizedClientException", INVALID_TOKEN)
        }
        AuthFailure::ExpiredToken => ApiError::client(
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ),
    }
}

fn query_auth_error(failure: AuthFailure) -> ApiError {
    const INVALID_TOKEN: &str = "The security token included in the request is invalid.";
    match failure {
        AuthFailure::Signature(SigV4Error::Missing) => ApiError::new(
            "MissingAuthenticationToken",
            403,
            "Request is missing Authentication Token",
        ),
        AuthFailure::Signature(SigV4Error::Incomplete(m)) => {
            ApiError::client("IncompleteSignature", m)
        }
        AuthFailure::Signature(SigV4Error::Invalid(m) | SigV4Error::Expired(m)) => {
            ApiError::new("SignatureDoesNotMatch", 403, m)
        }
        AuthFailure::UnknownAccessKey | AuthFailure::InvalidToken => {
            ApiError::new("InvalidClientTokenId", 403, INVALID_TOKEN)
        }
        AuthFailure::ExpiredToken => ApiError::new(
            "ExpiredToken",
            403,
            "The security token included in the request is expired",
        ),
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn response(
    status_code: StatusCode,
    content_type: &str,
    request_id: Option<&str>,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status_code;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

fn plain(status_code: StatusCode, content_type: &str, body: &str) -> Response<Full<Bytes>> {
    response(status_code, content_type, None, body.as_bytes().to_vec())
}

fn json_response(request_id: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    response(StatusCode::OK, JSON_CONTENT_TYPE, Some(request_id), body)
}

fn json_error(request_id: &str, error: &ApiError) -> Response<Full<Bytes>> {
    response(
        status(error.status),
        JSON_CONTENT_TYPE,
        Some(request_id),
        error.json_body(),
    )
}

fn xml_response(
    request_id: &str,
    namespace: &str,
    action: &str,
    result: &str,
) -> Response<Full<Bytes>> {
    let action = crate::xml::escape(action);
    let result_element = if result.is_empty() {
        String::new()
    } else {
        format!("<{action}Result>{result}</{action}Result>")
    };
    let body = format!(
        "<{action}Response xmlns=\"{namespace}\">{result_element}<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    );
    response(
        StatusCode::OK,
        "text/xml",
        Some(request_id),
        body.into_bytes(),
    )
}

fn xml_error(request_id: &str, error: &ApiError) -> Response<Full<Bytes>> {
    response(
        status(error.status),
        "text/xml",
        Some(request_id),
        error.xml_body(request_id),
    )
}

impl Edge {
    /// Renders an error found before the protocol was known for sure: JSON when the client
    /// sent a JSON content type, XML otherwise.
    fn error_response(
        &self,
        headers: &HeaderMap,
        request_id: &str,
        error: &ApiError,
    ) -> Response<Full<Bytes>> {
        let wants_json = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"))
            || headers.contains_key("x-amz-target");
        if wants_json {
            json_error(request_id, error)
        } else {
            xml_error(request_id, error)
        }
    }
}

/// Accepts connections until `shutdown` completes, then lets in-flight requests finish
/// (for at most `drain`).
pub async fn serve(
    edge: Arc<Edge>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Typically EMFILE: back off briefly instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let edge = edge.clone();
                let service = hyper::service::service_fn(move |request| {
                    let edge = edge.clone();
                    async move { Ok::<_, Infallible>(edge.handle(request, remote).await) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
                match &tls {
                    None => {
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        let connection = graceful.watch(connection);
                        tokio::spawn(async move {
                            let _ = connection.await;
                        });
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
                            let Ok(Ok(stream)) = handshake else {
                                return;
                            };
                            let connection = builder.serve_connection(TokioIo::new(stream), service);
                            let _ = watcher.watch(connection).await;
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after {drain:?}; closing them");
    }
}
