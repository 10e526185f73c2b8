//! kura's HTTP edge: the one listener every AWS-style API is served on.
//!
//! Owns: the HTTP listener (plain or TLS), SigV4 authentication, detection of the wire
//! protocol (AWS JSON 1.1 by `X-Amz-Target`, AWS Query by `Action=`), rendering of
//! responses and of errors in each protocol, request ids, metrics, and handing every
//! authenticated call to the audit trail before its response leaves.
//!
//! Must not: know what a key, a user or a database is. Services plug in through
//! [`JsonService`] / [`QueryService`]; identities come from a [`CredentialResolver`];
//! audit records go to an [`AuditSink`].

mod context;
mod error;
mod metrics;
mod server;
mod service;
pub mod sigv4;
pub mod tls;
pub mod xml;

pub use context::{
    Caller, Credential, CredentialResolver, IdentityType, RequestContext, SessionIssuer,
};
pub use error::ApiError;
pub use metrics::Metrics;
pub use server::{Edge, EdgeBuilder, MAX_BODY_BYTES, serve};
pub use service::{
    AuditDetails, AuditEvent, AuditResource, AuditSink, JsonService, LogAuditSink, QueryParams,
    QueryService, ServiceEvent,
};
