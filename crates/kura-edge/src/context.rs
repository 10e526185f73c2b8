//! Who is calling, and the facts about one request that services and the audit trail need.

use std::net::IpAddr;
use std::sync::Arc;

use kura_crypto::SecretBytes;
use kura_policy::Principal;
use kura_types::{Region, Timestamp};

/// How CloudTrail names the kind of identity that made a call (`userIdentity.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityType {
    Root,
    IamUser,
    AssumedRole,
}

impl IdentityType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "Root",
            Self::IamUser => "IAMUser",
            Self::AssumedRole => "AssumedRole",
        }
    }
}

/// For assumed-role callers: the role that issued the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionIssuer {
    pub role_arn: String,
    pub role_id: String,
    pub role_name: String,
    pub created: Timestamp,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub identity_type: IdentityType,
    pub access_key_id: String,
    pub session: Option<SessionIssuer>,
}

/// A secret access key and who it belongs to, as the credential store hands it to the edge.
pub struct Credential {
    pub secret: SecretBytes,
    /// Set for temporary credentials; the request must present the same token.
    pub session_token: Option<String>,
    /// Temporary credentials stop working at this time.
    pub expires: Option<Timestamp>,
    pub caller: Arc<Caller>,
}

/// Looks up access keys. Implemented by the IAM service; must be fast (every request).
pub trait CredentialResolver: Send + Sync + 'static {
    fn resolve(&self, access_key_id: &str) -> Option<Arc<Credential>>;
}

/// Everything known about one API request besides its parameters.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: String,
    pub caller: Arc<Caller>,
    pub region: Region,
    pub source_ip: IpAddr,
    pub user_agent: String,
    pub time: Timestamp,
    /// Set when an integrated kura service (e.g. the database service) makes this call on
    /// the caller's behalf: the service principal, such as `rds.amazonaws.com`.
    pub via_service: Option<&'static str>,
}

impl RequestContext {
    /// The same caller and request, as seen by a KMS call that `service` makes for them.
    pub fn on_behalf_via(&self, service: &'static str) -> Self {
        Self {
            via_service: Some(service),
            ..self.clone()
        }
    }
}
