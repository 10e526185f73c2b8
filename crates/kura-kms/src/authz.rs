//! KMS authorization, as AWS documents it ("How AWS KMS authorizes requests"):
//!
//! ```text
//! explicit Deny in the key policy or the caller's identity policies  → DENY
//! caller in the key's account:
//!     key policy allows the caller directly                           → ALLOW
//!     key policy allows the account (delegates to IAM)
//!         and an identity policy allows                               → ALLOW
//!     a grant on the key allows                                       → ALLOW
//! caller in another account:
//!     key policy allows (the caller or its account)
//!         and an identity policy in the caller's account allows       → ALLOW
//!     a grant on the key allows                                       → ALLOW
//! otherwise                                                           → DENY
//! ```
//!
//! The key policy is the root of trust: without a key-policy statement for the account,
//! no IAM policy can grant anything on the key. Denials name the caller, the action and
//! the reason, in AWS's words.

use kura_edge::RequestContext;
use kura_iam::Denial;
use kura_policy::{
    AuthzRequest, ContextKeys, Evaluation, PolicyDocument, PrincipalKind, PrincipalMatch,
    evaluate_all,
};

use crate::Kms;
use crate::error::{KmsError, KmsResult};
use crate::model::{GrantConstraints, GrantRecord};
use crate::registry::KeyEntry;
use crate::wire::Context;

/// Request-specific facts that feed condition keys and grant checks.
#[derive(Default, Clone, Copy)]
pub(crate) struct RequestFacts<'a> {
    pub encryption_context: Option<&'a Context>,
    pub request_alias: Option<&'a str>,
    /// For CreateGrant: the grant being asked for.
    pub new_grant: Option<&'a NewGrant<'a>>,
}

/// The grant a CreateGrant request asks for, as far as authorization cares.
pub(crate) struct NewGrant<'a> {
    pub operations: &'a [String],
    pub grantee: &'a str,
    pub retiring: Option<&'a str>,
    pub constraints: Option<&'a GrantConstraints>,
}

impl Kms {
    /// Authorizes `action` on `key` for the caller of `ctx`: policies first, then grants.
    pub(crate) fn authorize_key(
        &self,
        ctx: &RequestContext,
        action: &str,
        key: &KeyEntry,
        facts: &RequestFacts<'_>,
    ) -> KmsResult<()> {
        let mut context = self.base_context(ctx);
        add_key_facts(
            &mut context,
            key,
            &self
                .registry
                .alias_names_of_key(&key.record.account, key.record.id),
        );
        add_request_facts(&mut context, ctx, action, facts);
        match self.policy_decision(
            ctx,
            action,
            &key.arn,
            &key.record.account,
            &key.policy,
            &context,
        ) {
            Ok(()) => Ok(()),
            Err(denial)
                if !denial.is_explicit()
                    && self.grant_allows(ctx, action, key, facts, &context) =>
            {
                Ok(())
            }
            Err(denial) => Err(access_denied(denial, ctx, action, &key.arn)),
        }
    }

    /// Whether the key policy `policy` (of key `key_arn` owned by `key_account`) and the
    /// caller's identity policies allow `action`: the algorithm at the top of this module,
    /// without grants. Also used to test a new key policy before accepting it.
    pub(crate) fn decide(
        &self,
        ctx: &RequestContext,
        action: &str,
        key_arn: &str,
        key_account: &str,
        policy: &PolicyDocument,
        context: &ContextKeys,
    ) -> KmsResult<()> {
        self.policy_decision(ctx, action, key_arn, key_account, policy, context)
            .map_err(|denial| access_denied(denial, ctx, action, key_arn))
    }

    fn policy_decision(
        &self,
        ctx: &RequestContext,
        action: &str,
        key_arn: &str,
        key_account: &str,
        policy: &PolicyDocument,
        context: &ContextKeys,
    ) -> Result<(), Denial> {
        let principal = &ctx.caller.principal;
        let request = AuthzRequest {
            principal,
            action,
            resource: key_arn,
            context,
        };
        let key_policy = policy.evaluate(&request);
        let identity = self.identity_evaluation(ctx, &request);
        let same_account = principal.account == key_account;

        if matches!(key_policy, Evaluation::ExplicitDeny { .. }) {
            return Err(if same_account {
                Denial::ResourceDeny
            } else {
                Denial::CrossAccount
            });
        }
        if matches!(identity, Evaluation::ExplicitDeny { .. }) {
            return Err(Denial::IdentityDeny);
        }
        let identity_allows = matches!(identity, Evaluation::Allow { .. });
        let key_policy_allows = match key_policy {
            Evaluation::Allow {
                principal_match: PrincipalMatch::Direct,
                ..
            } => KeyPolicyAllow::Caller,
            Evaluation::Allow { .. } => KeyPolicyAllow::Account,
            _ => KeyPolicyAllow::No,
        };
        match (same_account, key_policy_allows) {
            (true, KeyPolicyAllow::Caller) => Ok(()),
            (_, KeyPolicyAllow::Account) | (false, KeyPolicyAllow::Caller) if identity_allows => {
                Ok(())
            }
            (true, KeyPolicyAllow::No) => Err(Denial::NoResourceAllow),
            (false, KeyPolicyAllow::No) => Err(Denial::CrossAccount),
            _ => Err(Denial::NoIdentityAllow),
        }
    }

    /// Whether a grant on `key` lets the caller perform `action` for this request.
    fn grant_allows(
        &self,
        ctx: &RequestContext,
        action: &str,
        key: &KeyEntry,
        facts: &RequestFacts<'_>,
        context: &ContextKeys,
    ) -> bool {
        let Some(operation) = action.strip_prefix("kms:") else {
            return false;
        };
        self.registry.grants_of(&key.record.id).iter().any(|grant| {
            grant.operations.iter().any(|op| op == operation)
                && self.is_grantee(ctx, grant, action, &key.arn, context)
                && constraints_hold(operation, grant, facts)
        })
    }

    /// Whether the caller is the grant's grantee: the very principal, the role of an
    /// assumed-role session, or a principal of a grantee account whose identity policies
    /// allow the action.
    fn is_grantee(
        &self,
        ctx: &RequestContext,
        grant: &GrantRecord,
        action: &str,
        key_arn: &str,
        context: &ContextKeys,
    ) -> bool {
        let principal = &ctx.caller.principal;
        if grant.grantee_principal == principal.arn {
            return true;
        }
        if let PrincipalKind::AssumedRole { role_arn, .. } = &principal.kind
            && *role_arn == grant.grantee_principal
        {
            return true;
        }
        if grant.grantee_principal == format!("arn:aws:iam::{}:root", principal.account) {
            let request = AuthzRequest {
                principal,
                action,
                resource: key_arn,
                context,
            };
            return matches!(
                self.identity_evaluation(ctx, &request),
                Evaluation::Allow { .. }
            );
        }
        false
    }

    /// Authorizes an action that has no key resource (CreateKey, ListKeys, ListAliases,
    /// GenerateRandom) or that is checked on an alias: identity policies only.
    pub(crate) fn authorize_identity(
        &self,
        ctx: &RequestContext,
        action: &str,
        resource: &str,
    ) -> KmsResult<()> {
        let context = self.base_context(ctx);
        let principal = &ctx.caller.principal;
        let request = AuthzRequest {
            principal,
            action,
            resource,
            context: &context,
        };
        let policies = self.iam.identity_policies(principal);
        kura_iam::authorize_identity(&policies, &request).map_err(KmsError::AccessDenied)
    }

    fn identity_evaluation(&self, ctx: &RequestContext, request: &AuthzRequest<'_>) -> Evaluation {
        let policies = self.iam.identity_policies(&ctx.caller.principal);
        evaluate_all(policies.iter().map(|p| -> &PolicyDocument { p }), request)
    }

    /// Condition keys every KMS request carries: the global ones, and the caller's
    /// account and the service it calls through.
    pub(crate) fn base_context(&self, ctx: &RequestContext) -> ContextKeys {
        let mut keys = kura_iam::base_context(ctx);
        keys.set("kms:CallerAccount", ctx.caller.principal.account.clone());
        if let Some(service) = ctx.via_service {
            keys.set(
                "kms:ViaService",
                via_service_name(service, ctx.region.as_str()),
            );
        }
        keys
    }
}

#[derive(Clone, Copy)]
enum KeyPolicyAllow {
    Caller,
    Account,
    No,
}

/// The AccessDeniedException of a refused key operation, in AWS's words.
fn access_denied(denial: Denial, ctx: &RequestContext, action: &str, key_arn: &str) -> KmsError {
    KmsError::AccessDenied(denial.message(&ctx.caller.principal.arn, action, key_arn))
}

/// `rds.amazonaws.com` in region `us-east-1` is `rds.us-east-1.amazonaws.com`, the form
/// of `kms:ViaService`.
pub(crate) fn via_service_name(service_principal: &str, region: &str) -> String {
    match service_principal.split_once('.') {
        Some((service, domain)) => format!("{service}.{region}.{domain}"),
        None => format!("{service_principal}.{region}.amazonaws.com"),
    }
}

fn add_key_facts(keys: &mut ContextKeys, key: &KeyEntry, aliases: &[String]) {
    keys.set("kms:KeySpec", "SYMMETRIC_DEFAULT");
    keys.set("kms:KeyUsage", "ENCRYPT_DECRYPT");
    keys.set("kms:KeyOrigin", "AWS_KMS");
    keys.set("kms:MultiRegion", "false");
    keys.set("kms:KeyManager", key.record.manager.as_str());
    keys.set_multi("kms:ResourceAliases", aliases.to_vec());
    for (tag, value) in &key.record.tags {
        keys.set(&format!("aws:ResourceTag/{tag}"), value.clone());
    }
}

fn add_request_facts(
    keys: &mut ContextKeys,
    ctx: &RequestContext,
    action: &str,
    facts: &RequestFacts<'_>,
) {
    if matches!(
        action,
        "kms:CreateGrant" | "kms:ListGrants" | "kms:RevokeGrant"
    ) {
        // True only when an integrated service (the database service) acts for the caller.
        let for_aws_resource = if ctx.via_service.is_some() {
            "true"
        } else {
            "false"
        };
        keys.set("kms:GrantIsForAWSResource", for_aws_resource);
    }
    if let Some(grant) = facts.new_grant {
        keys.set_multi("kms:GrantOperations", grant.operations.to_vec());
        keys.set("kms:GranteePrincipal", grant.grantee);
        if let Some(retiring) = grant.retiring {
            keys.set("kms:RetiringPrincipal", retiring);
        }
        if let Some(constraints) = grant.constraints {
            let mut types = Vec::new();
            if constraints.encryption_context_equals.is_some() {
                types.push("EncryptionContextEquals".to_owned());
            }
            if constraints.encryption_context_subset.is_some() {
                types.push("EncryptionContextSubset".to_owned());
            }
            keys.set_multi("kms:GrantConstraintType", types);
        }
    }
    if let Some(context) = facts.encryption_context {
        for (k, v) in context {
            keys.set(&format!("kms:EncryptionContext:{k}"), v.clone());
        }
        keys.set_multi(
            "kms:EncryptionContextKeys",
            context.keys().cloned().collect(),
        );
    }
    if let Some(alias) = facts.request_alias {
        keys.set("kms:RequestAlias", alias);
    }
}

/// Whether a grant's encryption-context constraints, and for CreateGrant its limits on
/// the grants it lets the grantee create, hold for this request.
fn constraints_hold(operation: &str, grant: &GrantRecord, facts: &RequestFacts<'_>) -> bool {
    match operation {
        // AWS ignores constraints for these operations.
        "DescribeKey" | "RetireGrant" => true,
        "CreateGrant" => facts.new_grant.is_some_and(|child| {
            child
                .operations
                .iter()
                .all(|op| grant.operations.contains(op))
                && at_least_as_strict(child.constraints, grant.constraints.as_ref())
        }),
        _ => {
            let Some(constraints) = &grant.constraints else {
                return true;
            };
            let empty = Context::new();
            let context = facts.encryption_context.unwrap_or(&empty);
            let equals = constraints
                .encryption_context_equals
                .as_ref()
                .is_none_or(|required| required == context);
            let subset = constraints
                .encryption_context_subset
                .as_ref()
                .is_none_or(|required| required.iter().all(|(k, v)| context.get(k) == Some(v)));
            equals && subset
        }
    }
}

/// A grant created through another grant may not loosen its constraints: every pair the
/// parent requires must be required by the child as well.
fn at_least_as_strict(child: Option<&GrantConstraints>, parent: Option<&GrantConstraints>) -> bool {
    let Some(parent) = parent else {
        return true;
    };
    let Some(child) = child else {
        return false;
    };
    let required_by_child = |k: &String, v: &String| {
        [
            &child.encryption_context_equals,
            &child.encryption_context_subset,
        ]
        .into_iter()
        .flatten()
        .any(|map| map.get(k) == Some(v))
    };
    [
        &parent.encryption_context_equals,
        &parent.encryption_context_subset,
    ]
    .into_iter()
    .flatten()
    .all(|map| map.iter().all(|(k, v)| required_by_child(k, v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_service_carries_the_region() {
        assert_eq!(
            via_service_name("rds.amazonaws.com", "ap-northeast-1"),
            "rds.ap-northeast-1.amazonaws.com"
        );
    }

    #[test]
    fn cross_account_denial_is_the_seed_message() {
        let message = Denial::CrossAccount.message(
            "arn:aws:iam::00000000AAAA:user/administrator",
            "kms:CreateGrant",
            "arn:x",
        );
        assert_eq!(
            message,
            "User: arn:aws:iam::00000000AAAA:user/administrator is not authorized to perform: kms:CreateGrant on this resource because the resource does not exist in this Region, no resource-based policies allow access, or a resource-based policy explicitly denies access"
        );
    }
}
