//! The STS API (AWS Query protocol, version 2011-06-15): GetCallerIdentity and
//! AssumeRole, as [`StsService`] serves it on the edge.

use std::sync::Arc;

use async_trait::async_trait;
use kura_edge::xml::XmlWriter;
use kura_edge::{ApiError, AuditDetails, AuditResource, QueryParams, QueryService, RequestContext};
use kura_policy::{AuthzRequest, PrincipalKind};
use serde_json::json;

use crate::authz::{Denial, base_context, decide_assume_role};
use crate::error::Api;
use crate::model::{self, SessionRecord};
use crate::names::{check_length, check_session_name, invalid};
use crate::query::{Params, audit_parameters};
use crate::state::{b64_encode, session_secret_label, session_token_label};
use crate::{Iam, IamError};

/// Shortest session AssumeRole grants, in seconds.
const MIN_SESSION_SECS: i64 = 900;
/// Longest session any role may allow.
const MAX_SESSION_SECS: i64 = 43_200;
const DEFAULT_SESSION_SECS: i64 = 3600;
/// Role chaining (a session assuming a role) is limited to one hour.
const CHAINED_SESSION_SECS: i64 = 3600;

/// Parameters of AssumeRole kura does not implement; refused rather than ignored, since
/// each of them would restrict or qualify the session.
const UNSUPPORTED: &[&str] = &[
    "Policy",
    "PolicyArns",
    "Tags",
    "TransitiveTagKeys",
    "SerialNumber",
    "TokenCode",
    "ProvidedContexts",
];

/// The STS Query API over an [`Iam`].
pub struct StsService {
    iam: Arc<Iam>,
}

impl StsService {
    pub fn new(iam: Arc<Iam>) -> Self {
        Self { iam }
    }
}

#[async_trait]
impl QueryService for StsService {
    fn signing_name(&self) -> &'static str {
        "sts"
    }

    fn event_source(&self) -> &'static str {
        "sts.amazonaws.com"
    }

    fn xml_namespace(&self) -> &'static str {
        "https://sts.amazonaws.com/doc/2011-06-15/"
    }

    /// STS's global endpoint is signed for `us-east-1`, whatever region clients use.
    fn is_global(&self) -> bool {
        true
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &QueryParams,
        audit: &mut AuditDetails,
    ) -> Result<String, ApiError> {
        self.iam
            .invoke_sts(ctx, action, params, audit)
            .map_err(|e| e.into_api_error(Api::Sts))
    }
}

impl Iam {
    /// Runs one STS action and returns the inner XML of its result element.
    pub(crate) fn invoke_sts(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &QueryParams,
        audit: &mut AuditDetails,
    ) -> Result<String, IamError> {
        let mut w = XmlWriter::new();
        match action {
            "GetCallerIdentity" => {
                audit.read_only = Some(true);
                let principal = &ctx.caller.principal;
                w.leaf("UserId", &principal.user_id)
                    .leaf("Account", &principal.account)
                    .leaf("Arn", &principal.arn);
            }
            "AssumeRole" => {
                audit.read_only = Some(true);
                audit.request_parameters = audit_parameters(params, &["TokenCode"]);
                self.assume_role(ctx, Params::new(params), audit, &mut w)?;
            }
            other => return Err(IamError::InvalidAction(other.to_owned())),
        }
        Ok(w.finish())
    }

    fn assume_role(
        &self,
        ctx: &RequestContext,
        p: Params<'_>,
        audit: &mut AuditDetails,
        w: &mut XmlWriter,
    ) -> Result<(), IamError> {
        let role_arn = p.required("RoleArn")?;
        check_length(role_arn, "roleArn", 20, 2048)?;
        let session_name = p.required("RoleSessionName")?;
        check_session_name(session_name)?;
        let duration = p.int("DurationSeconds")?.unwrap_or(DEFAULT_SESSION_SECS);
        if duration < MIN_SESSION_SECS {
            return Err(invalid(
                &duration.to_string(),
                "durationSeconds",
                "Member must have value greater than or equal to 900",
            ));
        }
        if duration > MAX_SESSION_SECS {
            return Err(invalid(
                &duration.to_string(),
                "durationSeconds",
                "Member must have value less than or equal to 43200",
            ));
        }
        let external_id = p.get("ExternalId");
        if let Some(id) = external_id {
            check_length(id, "externalId", 2, 1224)?;
            if !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c))
            {
                return Err(invalid(
                    id,
                    "externalId",
                    "Member must satisfy regular expression pattern: [\\w+=,.@:\\/-]*",
                ));
            }
        }
        let source_identity = p.get("SourceIdentity");
        if let Some(identity) = source_identity {
            check_length(identity, "sourceIdentity", 2, 64)?;
        }
        if let Some(name) = UNSUPPORTED.iter().find(|name| p.has(name)) {
            return Err(IamError::Validation(format!(
                "The {name} parameter of AssumeRole is not supported by this server."
            )));
        }

        let principal = &ctx.caller.principal;
        let mut context = base_context(ctx);
        context.set("sts:RoleSessionName", session_name);
        if let Some(id) = external_id {
            context.set("sts:ExternalId", id);
        }
        if let Some(identity) = source_identity {
            context.set("sts:SourceIdentity", identity);
        }
        let request = AuthzRequest {
            principal,
            action: "sts:AssumeRole",
            resource: role_arn,
            context: &context,
        };
        let state = self.snapshot();
        // A role that does not exist is denied like one that does not trust the caller.
        let role = state.role_by_arn(role_arn).ok_or_else(|| {
            IamError::AccessDenied(Denial::Plain.message(
                &principal.arn,
                "sts:AssumeRole",
                role_arn,
            ))
        })?;
        let caller_policies = self.identity_policies(principal);
        decide_assume_role(
            &request,
            &caller_policies,
            &role.trust,
            &role.record.account,
        )
        .map_err(IamError::AccessDenied)?;
        if duration > i64::from(role.record.max_session_duration) {
            return Err(IamError::Validation(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
                    .into(),
            ));
        }
        let chained = matches!(principal.kind, PrincipalKind::AssumedRole { .. });
        if chained && duration > CHAINED_SESSION_SECS {
            return Err(IamError::Validation(
                "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
                    .into(),
            ));
        }

        let access_key_id = model::new_unique_id("ASIA")?;
        let secret = model::new_secret_access_key()?;
        let token = model::new_session_token()?;
        let token_text = std::str::from_utf8(token.expose())
            .map_err(|_| IamError::Internal("generated session token is not text".into()))?
            .to_owned();
        let secret_text = std::str::from_utf8(secret.expose())
            .map_err(|_| IamError::Internal("generated secret is not text".into()))?;
        let role_id = role.record.role_id.clone();
        let session = self.apply(|draft| {
            // The role may have changed since the decision: it must still be the same one.
            let current = draft
                .state
                .role_by_arn(role_arn)
                .filter(|r| r.record.role_id == role_id)
                .ok_or_else(|| {
                    IamError::AccessDenied(Denial::Plain.message(
                        &principal.arn,
                        "sts:AssumeRole",
                        role_arn,
                    ))
                })?;
            let now = draft.now;
            let wrapped_secret = draft
                .root_key()
                .wrap(&session_secret_label(&access_key_id), secret.expose())?;
            let wrapped_token = draft
                .root_key()
                .wrap(&session_token_label(&access_key_id), token.expose())?;
            let session = SessionRecord {
                access_key_id: access_key_id.clone(),
                account: current.record.account.clone(),
                role_arn: current.record.arn(),
                role_name: current.record.name.clone(),
                role_id: current.record.role_id.clone(),
                session_name: session_name.to_owned(),
                created: now,
                expires: now.plus_millis(duration.saturating_mul(1000)),
                wrapped_secret: b64_encode(&wrapped_secret),
                wrapped_token: b64_encode(&wrapped_token),
                source_arn: principal.arn.clone(),
            };
            draft.put_session(session.clone(), secret.duplicate(), token_text.clone())?;
            Ok(session)
        })?;

        audit.resources.push(AuditResource {
            account_id: session.account.clone(),
            resource_type: "AWS::IAM::Role".to_owned(),
            arn: session.role_arn.clone(),
        });
        if session.account != principal.account {
            audit.also_deliver_to.push(session.account.clone());
        }
        audit.response_elements = Some(json!({
            "credentials": {
                "accessKeyId": session.access_key_id,
                "expiration": session.expires.iso8601_seconds(),
            },
            "assumedRoleUser": {
                "assumedRoleId": session.user_id(),
                "arn": session.arn(),
            },
        }));
        w.element("Credentials", |w| {
            w.leaf("AccessKeyId", &session.access_key_id)
                .leaf("SecretAccessKey", secret_text)
                .leaf("SessionToken", &token_text)
                .leaf("Expiration", &session.expires.iso8601_millis());
        });
        w.element("AssumedRoleUser", |w| {
            w.leaf("AssumedRoleId", &session.user_id())
                .leaf("Arn", &session.arn());
        });
        w.optional_leaf("SourceIdentity", source_identity);
        Ok(())
    }
}
