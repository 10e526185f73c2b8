//! Authorization of IAM and STS calls.
//!
//! IAM has no resource-based policies: an IAM action is allowed when the caller's
//! identity policies allow it on the target's ARN and no identity policy denies it, and
//! only inside the caller's own account. AssumeRole is decided by two documents: the
//! role's trust policy and the caller's identity policies.
//!
//! ```text
//! explicit Deny in the trust policy or in an identity policy          → DENY
//! trust policy names the caller (user, role, session, "*"), same account → ALLOW
//! trust policy names the caller's account (id or :root), or the caller
//!     is in another account: an identity policy must allow too          → ALLOW
//! otherwise                                                            → DENY
//! ```

use std::sync::Arc;

use kura_edge::RequestContext;
use kura_policy::{
    AuthzRequest, ContextKeys, Evaluation, PolicyDocument, PolicyError, PolicyKind, PrincipalKind,
    PrincipalMatch, evaluate_all,
};

use crate::names::parse_entity_arn;
use crate::{Iam, IamError};

pub(crate) fn parse_identity_policy(text: &str) -> Result<PolicyDocument, PolicyError> {
    PolicyDocument::parse(text, PolicyKind::Identity)
}

pub(crate) fn parse_trust_policy(text: &str) -> Result<PolicyDocument, PolicyError> {
    PolicyDocument::parse(text, PolicyKind::Trust)
}

/// The reasons AWS gives in access-denied messages, shared by every service so that all
/// denials read alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    IdentityDeny,
    NoIdentityAllow,
    ResourceDeny,
    NoResourceAllow,
    /// Another account's resource policy does not let the caller in (SEEDS.md point 20):
    /// AWS's wording does not reveal whether the resource exists.
    CrossAccount,
    /// STS's bare form, used when a trust policy does not let the caller in.
    Plain,
}

impl Denial {
    /// Explicit denies win over grants; missing allows do not.
    pub fn is_explicit(self) -> bool {
        matches!(self, Denial::ResourceDeny | Denial::IdentityDeny)
    }

    /// AWS's message; a `resource` of `*` (an action on no particular resource) is not named.
    pub fn message(self, principal: &str, action: &str, resource: &str) -> String {
        let on = match resource {
            "*" => String::new(),
            _ => format!(" on resource: {resource}"),
        };
        let head = format!("User: {principal} is not authorized to perform: {action}{on}");
        match self {
            Denial::IdentityDeny => {
                format!("{head} with an explicit deny in an identity-based policy")
            }
            Denial::NoIdentityAllow => {
                format!("{head} because no identity-based policy allows the {action} action")
            }
            Denial::ResourceDeny => {
                format!("{head} with an explicit deny in a resource-based policy")
            }
            Denial::NoResourceAllow => {
                format!("{head} because no resource-based policy allows the {action} action")
            }
            Denial::CrossAccount => format!(
                "User: {principal} is not authorized to perform: {action} on this resource because the resource does not exist in this Region, no resource-based policies allow access, or a resource-based policy explicitly denies access"
            ),
            Denial::Plain => head,
        }
    }
}

/// Identity-only authorization, one rule for every action that no resource-based policy
/// governs (IAM, CloudTrail, RDS, KMS's keyless actions): the caller's identity policies
/// decide, and the root user may do anything. `Err` is AWS's access-denied message.
pub fn authorize_identity(
    policies: &[Arc<PolicyDocument>],
    request: &AuthzRequest<'_>,
) -> Result<(), String> {
    identity_decision(policies, request)
        .map_err(|denial| denial.message(&request.principal.arn, request.action, request.resource))
}

/// Condition keys every request carries, whatever the service, so that a global key means
/// the same in every policy: the caller's (`aws:PrincipalArn` is the role's ARN for a role
/// session, as on AWS) and the request's (`aws:SourceIp`, `aws:CurrentTime`, ...).
pub fn base_context(ctx: &RequestContext) -> ContextKeys {
    let principal = &ctx.caller.principal;
    let mut keys = ContextKeys::new();
    keys.set(
        "aws:PrincipalArn",
        match &principal.kind {
            PrincipalKind::AssumedRole { role_arn, .. } => role_arn.clone(),
            _ => principal.arn.clone(),
        },
    );
    keys.set("aws:PrincipalAccount", principal.account.clone());
    keys.set("aws:userid", principal.user_id.clone());
    if let Some(name) = &principal.username {
        keys.set("aws:username", name.clone());
    }
    keys.set("aws:SourceIp", ctx.source_ip.to_string());
    keys.set("aws:CurrentTime", ctx.time.iso8601_seconds());
    keys.set("aws:EpochTime", ctx.time.secs().to_string());
    keys.set("aws:RequestedRegion", ctx.region.to_string());
    keys
}

/// Whether the identity policies allow a request, and if not, why.
fn identity_decision(
    policies: &[Arc<PolicyDocument>],
    request: &AuthzRequest<'_>,
) -> Result<(), Denial> {
    if matches!(request.principal.kind, PrincipalKind::Root) {
        // The root user is not governed by identity policies.
        return Ok(());
    }
    match evaluate_all(policies.iter().map(|p| -> &PolicyDocument { p }), request) {
        Evaluation::Allow { .. } => Ok(()),
        Evaluation::ExplicitDeny { .. } => Err(Denial::IdentityDeny),
        Evaluation::NotApplicable => Err(Denial::NoIdentityAllow),
    }
}

impl Iam {
    /// Authorizes the IAM action `action` (e.g. `iam:CreateUser`) on `resource` (the
    /// target's ARN) for the caller of `ctx`, with `extra` condition keys.
    pub(crate) fn authorize(
        &self,
        ctx: &RequestContext,
        action: &str,
        resource: &str,
        extra: &[(&str, &str)],
    ) -> Result<(), IamError> {
        let principal = &ctx.caller.principal;
        let mut context = base_context(ctx);
        for (name, value) in extra {
            context.set(name, *value);
        }
        let request = AuthzRequest {
            principal,
            action,
            resource,
            context: &context,
        };
        let policies = self.identity_policies(principal);
        authorize_identity(&policies, &request).map_err(IamError::AccessDenied)?;
        // IAM has no resource-based policies: another account's entities are out of reach.
        let foreign = parse_entity_arn(resource)
            .is_some_and(|arn| arn.account != "aws" && arn.account != principal.account);
        if foreign {
            return Err(IamError::AccessDenied(Denial::NoResourceAllow.message(
                &principal.arn,
                action,
                resource,
            )));
        }
        Ok(())
    }
}

/// Decides AssumeRole (the algorithm at the top of this module). `Err` carries the
/// access-denied message.
pub(crate) fn decide_assume_role(
    request: &AuthzRequest<'_>,
    caller_policies: &[Arc<PolicyDocument>],
    trust: &PolicyDocument,
    role_account: &str,
) -> Result<(), String> {
    let principal = request.principal;
    let denied =
        |reason: Denial| Err(reason.message(&principal.arn, request.action, request.resource));
    let trusted = trust.evaluate(request);
    if matches!(trusted, Evaluation::ExplicitDeny { .. }) {
        return denied(Denial::ResourceDeny);
    }
    let identity = identity_decision(caller_policies, request);
    if identity == Err(Denial::IdentityDeny) {
        return denied(Denial::IdentityDeny);
    }
    let same_account = principal.account == role_account;
    match trusted {
        Evaluation::Allow {
            principal_match: PrincipalMatch::Direct,
            ..
        } if same_account => Ok(()),
        Evaluation::Allow { .. } => match identity {
            Ok(()) => Ok(()),
            Err(reason) => denied(reason),
        },
        Evaluation::ExplicitDeny { .. } | Evaluation::NotApplicable => denied(Denial::Plain),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kura_policy::Principal;

    fn user(account: &str, name: &str) -> Principal {
        Principal {
            arn: format!("arn:aws:iam::{account}:user/{name}"),
            account: account.into(),
            kind: PrincipalKind::User,
            user_id: "AIDAEXAMPLEEXAMPLE00".into(),
            username: Some(name.into()),
        }
    }

    fn trust(principal: &str) -> PolicyDocument {
        parse_trust_policy(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{principal}"}},"Action":"sts:AssumeRole"}}]}}"#
        ))
        .unwrap()
    }

    fn identity(text: &str) -> Vec<Arc<PolicyDocument>> {
        vec![Arc::new(parse_identity_policy(text).unwrap())]
    }

    const ROLE: &str = "arn:aws:iam::111111111111:role/Admin";
    const ALLOW_ASSUME: &str = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"arn:aws:iam::111111111111:role/Admin"}}"#;
    const DENY_ALL: &str =
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*"}}"#;

    fn decide(
        caller: &Principal,
        policies: &[Arc<PolicyDocument>],
        trust: &PolicyDocument,
    ) -> Result<(), String> {
        let context = ContextKeys::new();
        let request = AuthzRequest {
            principal: caller,
            action: "sts:AssumeRole",
            resource: ROLE,
            context: &context,
        };
        decide_assume_role(&request, policies, trust, "111111111111")
    }

    #[test]
    fn same_account_user_named_in_trust_needs_no_identity_policy() {
        let alice = user("111111111111", "alice");
        assert!(decide(&alice, &[], &trust(&alice.arn)).is_ok());
        let denied = decide(&alice, &identity(DENY_ALL), &trust(&alice.arn));
        assert!(
            denied
                .unwrap_err()
                .ends_with("with an explicit deny in an identity-based policy")
        );
    }

    #[test]
    fn account_trust_needs_an_identity_policy() {
        let alice = user("111111111111", "alice");
        let by_account = trust("arn:aws:iam::111111111111:root");
        let message = decide(&alice, &[], &by_account).unwrap_err();
        assert_eq!(
            message,
            "User: arn:aws:iam::111111111111:user/alice is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::111111111111:role/Admin because no identity-based policy allows the sts:AssumeRole action"
        );
        assert!(decide(&alice, &identity(ALLOW_ASSUME), &by_account).is_ok());
        assert!(decide(&alice, &identity(ALLOW_ASSUME), &trust("111111111111")).is_ok());
    }

    #[test]
    fn cross_account_always_needs_both() {
        let bob = user("222222222222", "bob");
        assert!(decide(&bob, &[], &trust(&bob.arn)).is_err());
        assert!(decide(&bob, &identity(ALLOW_ASSUME), &trust(&bob.arn)).is_ok());
        assert!(decide(&bob, &identity(ALLOW_ASSUME), &trust("222222222222")).is_ok());
        let message = decide(&bob, &identity(ALLOW_ASSUME), &trust("333333333333")).unwrap_err();
        assert_eq!(
            message,
            "User: arn:aws:iam::222222222222:user/bob is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::111111111111:role/Admin"
        );
    }

    #[test]
    fn trust_deny_wins() {
        let alice = user("111111111111", "alice");
        let document = parse_trust_policy(&format!(
            r#"{{"Version":"2012-10-17","Statement":[
                {{"Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":"sts:AssumeRole"}},
                {{"Effect":"Deny","Principal":{{"AWS":"*"}},"Action":"sts:AssumeRole"}}]}}"#,
            alice.arn
        ))
        .unwrap();
        let message = decide(&alice, &identity(ALLOW_ASSUME), &document).unwrap_err();
        assert!(message.ends_with("with an explicit deny in a resource-based policy"));
    }
}
