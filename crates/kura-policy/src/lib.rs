//! kura-policy: the AWS IAM policy language, as a pure library.
//!
//! Owns: parsing and validating policy documents (identity policies, resource policies such
//! as KMS key policies, and role trust policies), compiling them once into a form that is
//! cheap to evaluate, and evaluating them against a request: principals, actions,
//! resources, conditions (every documented operator, `IfExists`, `ForAllValues:` /
//! `ForAnyValue:`) and policy variables.
//!
//! Must not touch: I/O of any kind, clocks (the caller supplies `aws:CurrentTime` /
//! `aws:EpochTime`), storage, or knowledge of any particular AWS service. How a service
//! combines key policies, identity policies and grants is the service's business; this
//! crate answers "what does this document (or this set of documents) say about this
//! request".
//!
//! ```
//! use kura_policy::*;
//! let policy = PolicyDocument::parse(
//!     r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}}"#,
//!     PolicyKind::Identity,
//! )?;
//! let alice = Principal {
//!     arn: "arn:aws:iam::111122223333:user/alice".into(),
//!     account: "111122223333".into(),
//!     kind: PrincipalKind::User,
//!     user_id: "AIDAEXAMPLE".into(),
//!     username: Some("alice".into()),
//! };
//! let context = ContextKeys::new();
//! let request = AuthzRequest { principal: &alice, action: "kms:Encrypt", resource: "*", context: &context };
//! assert!(matches!(policy.evaluate(&request), Evaluation::Allow { .. }));
//! # Ok::<(), PolicyError>(())
//! ```

mod condition;
mod document;
mod error;
mod glob;
mod principal;
mod request;
mod template;
mod values;

pub use document::{Effect, Evaluation, PolicyDocument, PolicyKind, PolicyVersion, Statement};
pub use error::PolicyError;
pub use principal::{PrincipalMatch, PrincipalRef, is_valid_principal_reference};
pub use request::{AuthzRequest, ContextKeys, ContextValue, Principal, PrincipalKind};

use document::{Decision, match_strength};

/// Evaluates a principal's set of policies (attached and inline) together: an applicable
/// `Deny` in any of them wins; otherwise the strongest applicable `Allow` (a direct
/// principal match over an identity grant over an account delegation); otherwise
/// `NotApplicable`.
pub fn evaluate_all<'p>(
    policies: impl IntoIterator<Item = &'p PolicyDocument>,
    request: &AuthzRequest<'_>,
) -> Evaluation {
    let mut best = Decision::None;
    for policy in policies {
        match policy.decide(request) {
            deny @ Decision::Deny(_) => return deny.into_evaluation(),
            Decision::Allow(statement, found) => {
                let stronger = match best {
                    Decision::Allow(_, current) => match_strength(found) > match_strength(current),
                    _ => true,
                };
                if stronger {
                    best = Decision::Allow(statement, found);
                }
            }
            Decision::None => {}
        }
    }
    best.into_evaluation()
}
