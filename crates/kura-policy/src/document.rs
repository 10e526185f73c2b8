//! A whole policy document: parsing every element into its compiled form, the per-kind
//! rules (identity, resource, trust), and evaluation of one document against a request.

use serde_json::{Map, Value};

use crate::condition::{Clause, parse_condition};
use crate::error::PolicyError;
use crate::glob::{Glob, GlobStyle};
use crate::principal::{PrincipalMatch, PrincipalRef, PrincipalSet, parse_principal_element};
use crate::request::AuthzRequest;
use crate::values::{Pattern, VariableSupport};

/// Where a policy is attached; decides which elements are required or forbidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Attached to a user, group or role: no `Principal`; `Resource` required.
    Identity,
    /// Attached to a resource (a KMS key policy): `Principal` required.
    Resource,
    /// A role's trust (assume-role) policy: `Principal` required, `Resource` forbidden.
    Trust,
}

/// The policy language version from the `Version` element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyVersion {
    /// `2012-10-17`: policy variables are substituted.
    V2012_10_17,
    /// `2008-10-17`, or no `Version`: `${…}` is literal text.
    V2008_10_17,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// The outcome of evaluating policies against one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// A `Deny` statement applied; it wins over every `Allow`.
    ExplicitDeny { sid: Option<String> },
    /// An `Allow` statement applied and no `Deny` did.
    Allow {
        sid: Option<String>,
        principal_match: PrincipalMatch,
    },
    /// No statement applied (implicit deny, unless another policy allows).
    NotApplicable,
}

/// A list of patterns, or its `Not…` complement.
#[derive(Debug, Clone, PartialEq)]
struct Scope<P> {
    patterns: Vec<P>,
    negated: bool,
}

impl<P> Scope<P> {
    fn covers(&self, mut matches: impl FnMut(&P) -> bool) -> bool {
        self.patterns.iter().any(&mut matches) != self.negated
    }
}

/// Which resources a statement covers.
#[derive(Debug, Clone, PartialEq)]
enum ResourceScope {
    /// Trust policies have no `Resource`: the role itself is the resource.
    Any,
    /// A key policy statement without `Resource` is accepted but never applies.
    Never,
    Listed(Scope<Pattern>),
}

#[derive(Debug, Clone, PartialEq)]
enum PrincipalScope {
    /// Identity policies: the caller is whoever the policy is attached to.
    Implied,
    Listed(PrincipalSet),
    Excluded(PrincipalSet),
}

/// One compiled statement. Read access for callers goes through the getters.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    sid: Option<String>,
    effect: Effect,
    principal: PrincipalScope,
    /// `None`: a key policy statement without `Action`, accepted but never applying.
    actions: Option<Scope<Glob>>,
    resources: ResourceScope,
    conditions: Vec<Clause>,
}

impl Statement {
    /// The statement's `Sid`, if it has one.
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    /// `Allow` or `Deny`.
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// The `"AWS"` principals of the `Principal` or `NotPrincipal` element (empty if none).
    pub fn aws_principals(&self) -> &[PrincipalRef] {
        self.principal_set().map_or(&[], |set| &set.aws)
    }

    /// The `"Service"` principals of the `Principal` or `NotPrincipal` element.
    pub fn service_principals(&self) -> &[String] {
        self.principal_set().map_or(&[], |set| &set.services)
    }

    /// Whether the principals above are a `NotPrincipal` exclusion list.
    pub fn is_not_principal(&self) -> bool {
        matches!(self.principal, PrincipalScope::Excluded(_))
    }

    /// Whether the statement has a non-empty `Condition` element.
    pub fn has_conditions(&self) -> bool {
        !self.conditions.is_empty()
    }

    fn principal_set(&self) -> Option<&PrincipalSet> {
        match &self.principal {
            PrincipalScope::Implied => None,
            PrincipalScope::Listed(set) | PrincipalScope::Excluded(set) => Some(set),
        }
    }

    /// How the statement covers the request, or `None` if it does not apply. Cheap checks
    /// run first; conditions last.
    fn applies(&self, request: &AuthzRequest<'_>) -> Option<PrincipalMatch> {
        let principal_match = match &self.principal {
            PrincipalScope::Implied => PrincipalMatch::NotApplicable,
            PrincipalScope::Listed(set) => set.best_match(request.principal)?,
            PrincipalScope::Excluded(set) => match set.best_match(request.principal) {
                Some(_) => return None,
                None => PrincipalMatch::Direct,
            },
        };
        let covered = self.covers_action(request.action)
            && self.covers_resource(request)
            && self.conditions.iter().all(|c| c.holds(request));
        covered.then_some(principal_match)
    }

    fn covers_action(&self, action: &str) -> bool {
        self.actions
            .as_ref()
            .is_some_and(|scope| scope.covers(|glob| glob.matches(action)))
    }

    fn covers_resource(&self, request: &AuthzRequest<'_>) -> bool {
        match &self.resources {
            ResourceScope::Any => true,
            ResourceScope::Never => false,
            ResourceScope::Listed(scope) => {
                scope.covers(|pattern| pattern.matches(request.resource, request))
            }
        }
    }
}

/// A parsed, validated and compiled policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    kind: PolicyKind,
    version: PolicyVersion,
    id: Option<String>,
    statements: Vec<Statement>,
}

/// How strongly an `Allow` covers the caller: a direct grant beats an identity-policy
/// grant, which beats a delegation to the caller's account.
pub(crate) fn match_strength(principal_match: PrincipalMatch) -> u8 {
    match principal_match {
        PrincipalMatch::Direct => 2,
        PrincipalMatch::NotApplicable => 1,
        PrincipalMatch::Account => 0,
    }
}

/// The result of one document, borrowing the deciding statement (no allocation).
pub(crate) enum Decision<'p> {
    Deny(&'p Statement),
    Allow(&'p Statement, PrincipalMatch),
    None,
}

impl Decision<'_> {
    pub(crate) fn into_evaluation(self) -> Evaluation {
        match self {
            Decision::Deny(statement) => Evaluation::ExplicitDeny {
                sid: statement.sid.clone(),
            },
            Decision::Allow(statement, principal_match) => Evaluation::Allow {
                sid: statement.sid.clone(),
                principal_match,
            },
            Decision::None => Evaluation::NotApplicable,
        }
    }
}

impl PolicyDocument {
    /// Parses and validates a policy of the given kind.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<PolicyDocument, PolicyError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let Value::Object(top) = value else {
            return Err(PolicyError::NotAnObject);
        };
        reject_unknown_fields(&top, &["Version", "Id", "Statement"], "Policy")?;
        let version = parse_version(top.get("Version"))?;
        let id = optional_string(top.get("Id"), "Policy", "Id")?;
        let statement_values = match top.get("Statement") {
            None => return Err(PolicyError::NoStatements),
            Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
            Some(single) => vec![single],
        };
        if statement_values.is_empty() {
            return Err(PolicyError::NoStatements);
        }
        let statements = statement_values
            .into_iter()
            .enumerate()
            .map(|(index, value)| parse_statement(value, index, kind, version))
            .collect::<Result<Vec<_>, _>>()?;
        reject_duplicate_sids(&statements)?;
        Ok(PolicyDocument {
            kind,
            version,
            id,
            statements,
        })
    }

    /// Evaluates this document alone: any applicable `Deny` wins, then the strongest
    /// applicable `Allow`, else `NotApplicable`.
    pub fn evaluate(&self, request: &AuthzRequest<'_>) -> Evaluation {
        self.decide(request).into_evaluation()
    }

    pub(crate) fn decide(&self, request: &AuthzRequest<'_>) -> Decision<'_> {
        let mut best: Option<(&Statement, PrincipalMatch)> = None;
        // Every statement must be checked for a Deny; Allows only until a direct one is found.
        for statement in &self.statements {
            let is_deny = statement.effect == Effect::Deny;
            let settled = best.is_some_and(|(_, m)| m == PrincipalMatch::Direct);
            if !is_deny && settled {
                continue;
            }
            let Some(principal_match) = statement.applies(request) else {
                continue;
            };
            if is_deny {
                return Decision::Deny(statement);
            }
            let stronger = best.is_none_or(|(_, current)| {
                match_strength(principal_match) > match_strength(current)
            });
            if stronger {
                best = Some((statement, principal_match));
            }
        }
        best.map_or(Decision::None, |(statement, m)| {
            Decision::Allow(statement, m)
        })
    }

    /// The statements, in document order.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    pub fn version(&self) -> PolicyVersion {
        self.version
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

fn parse_version(value: Option<&Value>) -> Result<PolicyVersion, PolicyError> {
    match value {
        None => Ok(PolicyVersion::V2008_10_17),
        Some(Value::String(v)) if v == "2012-10-17" => Ok(PolicyVersion::V2012_10_17),
        Some(Value::String(v)) if v == "2008-10-17" => Ok(PolicyVersion::V2008_10_17),
        Some(other) => Err(PolicyError::InvalidVersion(other.to_string())),
    }
}

fn reject_unknown_fields(
    object: &Map<String, Value>,
    known: &[&str],
    at: &str,
) -> Result<(), PolicyError> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(field) => Err(PolicyError::UnknownField {
            at: at.to_owned(),
            field: field.clone(),
        }),
        None => Ok(()),
    }
}

fn optional_string(
    value: Option<&Value>,
    at: &str,
    element: &'static str,
) -> Result<Option<String>, PolicyError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(PolicyError::InvalidElement {
            at: at.to_owned(),
            element,
            reason: format!("expected a string, got {other}"),
        }),
    }
}

fn reject_duplicate_sids(statements: &[Statement]) -> Result<(), PolicyError> {
    let mut seen: Vec<&str> = Vec::with_capacity(statements.len());
    for sid in statements.iter().filter_map(Statement::sid) {
        if seen.contains(&sid) {
            return Err(PolicyError::DuplicateSid(sid.to_owned()));
        }
        seen.push(sid);
    }
    Ok(())
}

const STATEMENT_FIELDS: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

/// Returns whichever of a positive/negative pair of elements is present (error if both).
fn pick_pair<'v>(
    object: &'v Map<String, Value>,
    at: &str,
    positive: &'static str,
    negative: &'static str,
) -> Result<Option<(&'v Value, bool)>, PolicyError> {
    match (object.get(positive), object.get(negative)) {
        (Some(_), Some(_)) => Err(PolicyError::ConflictingFields {
            at: at.to_owned(),
            first: positive,
            second: negative,
        }),
        (Some(value), None) => Ok(Some((value, false))),
        (None, Some(value)) => Ok(Some((value, true))),
        (None, None) => Ok(None),
    }
}

fn parse_statement(
    value: &Value,
    index: usize,
    kind: PolicyKind,
    version: PolicyVersion,
) -> Result<Statement, PolicyError> {
    let Value::Object(object) = value else {
        return Err(PolicyError::InvalidElement {
            at: format!("Statement {}", index + 1),
            element: "Statement",
            reason: "each statement must be a JSON object".into(),
        });
    };
    let sid = optional_string(
        object.get("Sid"),
        &format!("Statement {}", index + 1),
        "Sid",
    )?;
    let at = match &sid {
        Some(sid) => format!("Statement {} (Sid {sid:?})", index + 1),
        None => format!("Statement {}", index + 1),
    };
    reject_unknown_fields(object, STATEMENT_FIELDS, &at)?;
    let effect = parse_effect(object.get("Effect"), &at)?;
    let variables = match version {
        PolicyVersion::V2012_10_17 => VariableSupport::Enabled,
        PolicyVersion::V2008_10_17 => VariableSupport::Disabled,
    };
    Ok(Statement {
        principal: parse_principal_scope(object, &at, kind, effect)?,
        actions: parse_actions(object, &at, kind)?,
        resources: parse_resources(object, &at, kind, variables)?,
        conditions: match object.get("Condition") {
            None => Vec::new(),
            Some(element) => parse_condition(element, variables).map_err(|reason| {
                PolicyError::InvalidCondition {
                    at: at.clone(),
                    reason,
                }
            })?,
        },
        sid,
        effect,
    })
}

fn parse_effect(value: Option<&Value>, at: &str) -> Result<Effect, PolicyError> {
    match value {
        None => Err(PolicyError::MissingField {
            at: at.to_owned(),
            field: "Effect",
        }),
        Some(Value::String(s)) if s == "Allow" => Ok(Effect::Allow),
        Some(Value::String(s)) if s == "Deny" => Ok(Effect::Deny),
        Some(other) => Err(PolicyError::InvalidElement {
            at: at.to_owned(),
            element: "Effect",
            reason: format!("must be \"Allow\" or \"Deny\", got {other}"),
        }),
    }
}

fn parse_principal_scope(
    object: &Map<String, Value>,
    at: &str,
    kind: PolicyKind,
    effect: Effect,
) -> Result<PrincipalScope, PolicyError> {
    let picked = pick_pair(object, at, "Principal", "NotPrincipal")?;
    let at_owned = || at.to_owned();
    let (element, negated) = match (kind, picked) {
        (PolicyKind::Identity, None) => return Ok(PrincipalScope::Implied),
        (PolicyKind::Identity, Some(_)) => {
            return Err(PolicyError::PrincipalNotAllowed { at: at_owned() });
        }
        (_, None) => {
            return Err(PolicyError::MissingField {
                at: at_owned(),
                field: "Principal",
            });
        }
        (PolicyKind::Trust, Some((_, true))) => {
            return Err(PolicyError::ProhibitedField {
                at: at_owned(),
                field: "NotPrincipal",
            });
        }
        (_, Some(picked)) => picked,
    };
    // AWS documents NotPrincipal as supported only together with "Effect": "Deny".
    if negated && effect == Effect::Allow {
        return Err(PolicyError::InvalidElement {
            at: at_owned(),
            element: "NotPrincipal",
            reason: "NotPrincipal can only be used with \"Effect\": \"Deny\"".into(),
        });
    }
    let set = parse_principal_element(element).map_err(|value| PolicyError::InvalidPrincipal {
        at: at_owned(),
        value,
    })?;
    Ok(if negated {
        PrincipalScope::Excluded(set)
    } else {
        PrincipalScope::Listed(set)
    })
}

/// A string or a non-empty array of strings.
fn string_list<'v>(
    value: &'v Value,
    at: &str,
    element: &'static str,
) -> Result<Vec<&'v str>, PolicyError> {
    let invalid = |reason: &str| PolicyError::InvalidElement {
        at: at.to_owned(),
        element,
        reason: reason.to_owned(),
    };
    let list: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| invalid("every entry must be a string"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("must be a string or an array of strings")),
    };
    if list.is_empty() {
        return Err(invalid("must not be empty"));
    }
    Ok(list)
}

fn parse_actions(
    object: &Map<String, Value>,
    at: &str,
    kind: PolicyKind,
) -> Result<Option<Scope<Glob>>, PolicyError> {
    let Some((value, negated)) = pick_pair(object, at, "Action", "NotAction")? else {
        return match kind {
            PolicyKind::Resource => Ok(None),
            PolicyKind::Identity | PolicyKind::Trust => Err(PolicyError::MissingField {
                at: at.to_owned(),
                field: "Action",
            }),
        };
    };
    let element = if negated { "NotAction" } else { "Action" };
    let patterns = string_list(value, at, element)?
        .into_iter()
        .map(|action| {
            if is_action_pattern(action) {
                Ok(Glob::new(action, GlobStyle::Action))
            } else {
                Err(PolicyError::InvalidElement {
                    at: at.to_owned(),
                    element,
                    reason: format!("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc. Got {action:?}"),
                })
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(Scope { patterns, negated }))
}

/// `*`, or `prefix:name` where both parts are non-empty printable ASCII without spaces.
fn is_action_pattern(action: &str) -> bool {
    if action == "*" {
        return true;
    }
    let Some((prefix, name)) = action.split_once(':') else {
        return false;
    };
    let prefix_ok = !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*' | b'?'));
    let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    prefix_ok && name_ok
}

fn parse_resources(
    object: &Map<String, Value>,
    at: &str,
    kind: PolicyKind,
    variables: VariableSupport,
) -> Result<ResourceScope, PolicyError> {
    let picked = pick_pair(object, at, "Resource", "NotResource")?;
    let (value, negated) = match (kind, picked) {
        (PolicyKind::Trust, None) => return Ok(ResourceScope::Any),
        (PolicyKind::Trust, Some((_, negated))) => {
            return Err(PolicyError::ProhibitedField {
                at: at.to_owned(),
                field: if negated { "NotResource" } else { "Resource" },
            });
        }
        (PolicyKind::Resource, None) => return Ok(ResourceScope::Never),
        (PolicyKind::Identity, None) => {
            return Err(PolicyError::MissingField {
                at: at.to_owned(),
                field: "Resource",
            });
        }
        (_, Some(picked)) => picked,
    };
    let element = if negated { "NotResource" } else { "Resource" };
    let patterns = string_list(value, at, element)?
        .into_iter()
        .map(|resource| parse_resource_pattern(resource, variables, at, element))
        .collect::<Result<_, _>>()?;
    Ok(ResourceScope::Listed(Scope { patterns, negated }))
}

fn parse_resource_pattern(
    resource: &str,
    variables: VariableSupport,
    at: &str,
    element: &'static str,
) -> Result<Pattern, PolicyError> {
    let invalid = |reason: String| PolicyError::InvalidElement {
        at: at.to_owned(),
        element,
        reason,
    };
    let arn_shaped = resource.starts_with("arn:")
        && (resource.split(':').count() >= 6 || resource.ends_with('*'));
    if resource != "*" && !arn_shaped {
        return Err(invalid(format!(
            "Resource {resource} must be in ARN format or \"*\"."
        )));
    }
    // "*" compiles to the match-everything shape in any style.
    let style = GlobStyle::ResourceArn;
    Pattern::parse(resource, style, variables).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{ContextKeys, Principal, PrincipalKind};

    fn alice() -> Principal {
        Principal {
            arn: "arn:aws:iam::111122223333:user/alice".into(),
            account: "111122223333".into(),
            kind: PrincipalKind::User,
            user_id: "AIDAEXAMPLE".into(),
            username: Some("alice".into()),
        }
    }

    fn evaluate(policy: &str, kind: PolicyKind, action: &str) -> Result<Evaluation, PolicyError> {
        let document = PolicyDocument::parse(policy, kind)?;
        let principal = alice();
        let context = ContextKeys::new();
        Ok(document.evaluate(&AuthzRequest {
            principal: &principal,
            action,
            resource: "arn:aws:kms:us-east-1:111122223333:key/k",
            context: &context,
        }))
    }

    #[test]
    fn action_shapes() {
        for ok in ["*", "kms:*", "kms:Encrypt", "s3:Get*Object?", "*:Describe*"] {
            assert!(is_action_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "Encrypt",
            "kms:",
            ":Encrypt",
            "kms:En crypt",
            "kms:a:b",
            "km s:x",
        ] {
            assert!(!is_action_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn version_rules() -> Result<(), PolicyError> {
        let body = r#""Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}"#;
        let parse = |text: String| PolicyDocument::parse(&text, PolicyKind::Identity);
        assert_eq!(
            parse(format!(r#"{{"Version":"2012-10-17",{body}}}"#))?.version(),
            PolicyVersion::V2012_10_17
        );
        assert_eq!(
            parse(format!("{{{body}}}"))?.version(),
            PolicyVersion::V2008_10_17
        );
        assert!(parse(format!(r#"{{"Version":20121017,{body}}}"#)).is_err());
        Ok(())
    }

    #[test]
    fn a_later_deny_is_found_after_a_direct_allow() -> Result<(), PolicyError> {
        let policy = r#"{"Version":"2012-10-17","Statement":[
            {"Sid":"A","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*","Resource":"*"},
            {"Sid":"B","Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"},
            {"Sid":"D","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*"}]}"#;
        assert_eq!(
            evaluate(policy, PolicyKind::Resource, "kms:Decrypt")?,
            Evaluation::ExplicitDeny {
                sid: Some("D".into())
            }
        );
        assert_eq!(
            evaluate(policy, PolicyKind::Resource, "kms:Encrypt")?,
            Evaluation::Allow {
                sid: Some("A".into()),
                principal_match: PrincipalMatch::Direct
            }
        );
        Ok(())
    }

    #[test]
    fn statement_getters() -> Result<(), PolicyError> {
        let document = PolicyDocument::parse(
            r#"{"Version":"2012-10-17","Id":"k","Statement":{"Sid":"S","Effect":"Deny",
               "NotPrincipal":{"AWS":["111122223333"],"Service":"rds.amazonaws.com"},
               "Action":"kms:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":false}}}}"#,
            PolicyKind::Resource,
        )?;
        assert_eq!(document.id(), Some("k"));
        assert_eq!(document.kind(), PolicyKind::Resource);
        let statement = document.statements().first();
        assert_eq!(statement.and_then(Statement::sid), Some("S"));
        assert_eq!(statement.map(Statement::effect), Some(Effect::Deny));
        assert_eq!(statement.map(Statement::is_not_principal), Some(true));
        assert_eq!(statement.map(Statement::has_conditions), Some(true));
        assert_eq!(
            statement.map(Statement::aws_principals),
            Some(
                &[PrincipalRef::Account {
                    account: "111122223333".into()
                }][..]
            )
        );
        assert_eq!(
            statement.map(Statement::service_principals),
            Some(&["rds.amazonaws.com".to_owned()][..])
        );
        Ok(())
    }
}
