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
use kura_policy::{
    AuthzRequest, ContextKeys, Evaluation, PolicyDocument, PrincipalMatch, evaluate_all,
};

use crate::Kms;
use crate::error::{KmsError, KmsResult};
use crate::registry::KeyEntry;
use crate::wire::Context;

/// Request-specific facts that feed condition keys.
#[derive(Default)]
pub(crate) struct RequestFacts<'a> {
    pub encryption_context: Option<&'a Context>,
    pub request_alias: Option<&'a str>,
}

impl Kms {
    /// Authorizes `action` on `key` for the caller of `ctx`.
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
        add_request_facts(&mut context, facts);
        self.decide(
            ctx,
            action,
            &key.arn,
            &key.record.account,
            &key.policy,
            &context,
        )
    }

    /// Whether `policy`, as the key policy of the key `key_arn` owned by `key_account`,
    /// together with the caller's identity policies, allows `action` (the algorithm at
    /// the top of this module). Also used to test a new policy before accepting it.
    pub(crate) fn decide(
        &self,
        ctx: &RequestContext,
        action: &str,
        key_arn: &str,
        key_account: &str,
        policy: &PolicyDocument,
        context: &ContextKeys,
    ) -> KmsResult<()> {
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
        let denied = |reason: Denial| {
            Err(KmsError::AccessDenied(reason.message(
                &principal.arn,
                action,
                Some(key_arn),
            )))
        };

        if matches!(key_policy, Evaluation::ExplicitDeny { .. }) {
            return if same_account {
                denied(Denial::ResourceDeny)
            } else {
                denied(Denial::CrossAccount)
            };
        }
        if matches!(identity, Evaluation::ExplicitDeny { .. }) {
            return denied(Denial::IdentityDeny);
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
        let allowed = match (same_account, key_policy_allows) {
            (true, KeyPolicyAllow::Caller) => true,
            (_, KeyPolicyAllow::Account) | (false, KeyPolicyAllow::Caller) => identity_allows,
            (_, KeyPolicyAllow::No) => false,
        };
        if allowed {
            return Ok(());
        }
        match (same_account, key_policy_allows) {
            (true, KeyPolicyAllow::No) => denied(Denial::NoResourceAllow),
            (false, KeyPolicyAllow::No) => denied(Denial::CrossAccount),
            _ => denied(Denial::NoIdentityAllow),
        }
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
        let shown_resource = (resource != "*").then_some(resource);
        match self.identity_evaluation(ctx, &request) {
            Evaluation::Allow { .. } => Ok(()),
            Evaluation::ExplicitDeny { .. } => Err(KmsError::AccessDenied(
                Denial::IdentityDeny.message(&principal.arn, action, shown_resource),
            )),
            Evaluation::NotApplicable => Err(KmsError::AccessDenied(
                Denial::NoIdentityAllow.message(&principal.arn, action, shown_resource),
            )),
        }
    }

    fn identity_evaluation(&self, ctx: &RequestContext, request: &AuthzRequest<'_>) -> Evaluation {
        let policies = self.iam.identity_policies(&ctx.caller.principal);
        evaluate_all(policies.iter().map(|p| -> &PolicyDocument { p }), request)
    }

    /// Condition keys every KMS request carries.
    pub(crate) fn base_context(&self, ctx: &RequestContext) -> ContextKeys {
        let principal = &ctx.caller.principal;
        let mut keys = ContextKeys::new();
        keys.set("kms:CallerAccount", principal.account.clone());
        if let Some(service) = ctx.via_service {
            keys.set(
                "kms:ViaService",
                via_service_name(service, ctx.region.as_str()),
            );
        }
        keys.set("aws:PrincipalArn", principal.arn.clone());
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
}

#[derive(Clone, Copy)]
enum KeyPolicyAllow {
    Caller,
    Account,
    No,
}

/// The reasons AWS gives in access-denied messages.
#[derive(Clone, Copy)]
enum Denial {
    ResourceDeny,
    IdentityDeny,
    NoResourceAllow,
    NoIdentityAllow,
    CrossAccount,
}

impl Denial {
    fn message(self, principal: &str, action: &str, resource: Option<&str>) -> String {
        let on = resource
            .map(|r| format!(" on resource: {r}"))
            .unwrap_or_default();
        match self {
            Denial::ResourceDeny => format!(
                "User: {principal} is not authorized to perform: {action}{on} with an explicit deny in a resource-based policy"
            ),
            Denial::IdentityDeny => format!(
                "User: {principal} is not authorized to perform: {action}{on} with an explicit deny in an identity-based policy"
            ),
            Denial::NoResourceAllow => format!(
                "User: {principal} is not authorized to perform: {action}{on} because no resource-based policy allows the {action} action"
            ),
            Denial::NoIdentityAllow => format!(
                "User: {principal} is not authorized to perform: {action}{on} because no identity-based policy allows the {action} action"
            ),
            // AWS's wording when another account's key policy does not let the caller in
            // (SEEDS.md point 20): it does not reveal whether the key exists.
            Denial::CrossAccount => format!(
                "User: {principal} is not authorized to perform: {action} on this resource because the resource does not exist in this Region, no resource-based policies allow access, or a resource-based policy explicitly denies access"
            ),
        }
    }
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

fn add_request_facts(keys: &mut ContextKeys, facts: &RequestFacts<'_>) {
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
            Some("arn:x"),
        );
        assert_eq!(
            message,
            "User: arn:aws:iam::00000000AAAA:user/administrator is not authorized to perform: kms:CreateGrant on this resource because the resource does not exist in this Region, no resource-based policies allow access, or a resource-based policy explicitly denies access"
        );
    }
}
