//! The `Principal` / `NotPrincipal` element: which callers a statement names, and how a
//! caller is matched against them (AWS JSON policy elements: Principal).

use serde_json::Value;

use crate::request::{Principal, PrincipalKind};

/// How a statement's principal element covered the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalMatch {
    /// The statement has no principal element (identity policies).
    NotApplicable,
    /// The statement named this user, role, session or root user, or `"*"`.
    Direct,
    /// The statement named the caller's account (12-digit id or `arn:aws:iam::ID:root`):
    /// a delegation to that account's IAM policies, not a grant to the caller. (When the
    /// caller is that account's root user the match is [`PrincipalMatch::Direct`].)
    Account,
}

/// One parsed `"AWS"` principal value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalRef {
    /// `"*"`: every caller.
    Everyone,
    /// `"111122223333"` or `"arn:aws:iam::111122223333:root"`.
    Account { account: String },
    /// `arn:aws:iam::ID:user/path/name`.
    User { arn: String },
    /// `arn:aws:iam::ID:role/path/name`: the role and every session of it.
    Role { arn: String },
    /// `arn:aws:sts::ID:assumed-role/ROLE/SESSION`: that session only.
    AssumedRoleSession { arn: String },
    /// `arn:aws:sts::ID:federated-user/name`.
    FederatedUser { arn: String },
}

/// The callers a `Principal` or `NotPrincipal` element lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PrincipalSet {
    pub(crate) aws: Vec<PrincipalRef>,
    pub(crate) services: Vec<String>,
}

/// Whether `text` is a valid `"AWS"` principal value (`*`, an account id, or a user, role,
/// root, assumed-role or federated-user ARN without wildcards).
pub fn is_valid_principal_reference(text: &str) -> bool {
    parse_aws_principal(text).is_some()
}

/// Parses a `Principal` element value. `Err` carries the offending text for the message.
pub(crate) fn parse_principal_element(element: &Value) -> Result<PrincipalSet, String> {
    let mut set = PrincipalSet::default();
    match element {
        Value::String(s) if s == "*" => set.aws.push(PrincipalRef::Everyone),
        Value::Object(by_type) if !by_type.is_empty() => {
            for (kind, values) in by_type {
                let values = principal_strings(kind, values)?;
                match kind.as_str() {
                    "AWS" => {
                        for value in values {
                            let parsed = parse_aws_principal(value)
                                .ok_or_else(|| format!("\"AWS\":\"{value}\""))?;
                            set.aws.push(parsed);
                        }
                    }
                    "Service" => {
                        for value in values {
                            if !is_service_name(value) {
                                return Err(format!("\"Service\":\"{value}\""));
                            }
                            set.services.push(value.to_owned());
                        }
                    }
                    // Accepted for compatibility; no kura caller is ever one of these.
                    "Federated" | "CanonicalUser" => {}
                    _ => return Err(format!("\"{kind}\"")),
                }
            }
        }
        other => return Err(other.to_string()),
    }
    Ok(set)
}

fn principal_strings<'v>(kind: &str, values: &'v Value) -> Result<Vec<&'v str>, String> {
    let invalid = || format!("\"{kind}\":{values}");
    let strings: Vec<&str> = match values {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(invalid))
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid()),
    };
    if strings.is_empty() || strings.iter().any(|s| s.is_empty()) {
        return Err(invalid());
    }
    Ok(strings)
}

fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

/// A name or path inside a principal ARN: no wildcards (AWS rejects them in principals),
/// no whitespace, no empty path components.
fn is_identity_path(text: &str) -> bool {
    !text.is_empty()
        && !text.split('/').any(str::is_empty)
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '?' | ':'))
}

fn parse_aws_principal(text: &str) -> Option<PrincipalRef> {
    if text == "*" {
        return Some(PrincipalRef::Everyone);
    }
    if is_account_id(text) {
        return Some(PrincipalRef::Account {
            account: text.to_owned(),
        });
    }
    let mut parts = text.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let partition_ok = partition.starts_with("aws")
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-');
    if !partition_ok || !is_account_id(account) {
        return None;
    }
    let arn = || text.to_owned();
    match (service, resource.split_once('/')) {
        ("iam", None) if resource == "root" => Some(PrincipalRef::Account {
            account: account.to_owned(),
        }),
        ("iam", Some(("user", path))) if is_identity_path(path) => {
            Some(PrincipalRef::User { arn: arn() })
        }
        ("iam", Some(("role", path))) if is_identity_path(path) => {
            Some(PrincipalRef::Role { arn: arn() })
        }
        ("sts", Some(("assumed-role", rest)))
            if is_identity_path(rest) && rest.split('/').count() == 2 =>
        {
            Some(PrincipalRef::AssumedRoleSession { arn: arn() })
        }
        ("sts", Some(("federated-user", name))) if is_identity_path(name) => {
            Some(PrincipalRef::FederatedUser { arn: arn() })
        }
        _ => None,
    }
}

impl PrincipalSet {
    /// The strongest way this set names `caller`, or `None` if it does not.
    pub(crate) fn best_match(&self, caller: &Principal) -> Option<PrincipalMatch> {
        if let PrincipalKind::Service { name } = &caller.kind {
            let named = self.aws.contains(&PrincipalRef::Everyone)
                || self.services.iter().any(|s| s.eq_ignore_ascii_case(name));
            return named.then_some(PrincipalMatch::Direct);
        }
        let mut best = None;
        for reference in &self.aws {
            match reference_match(reference, caller) {
                Some(PrincipalMatch::Direct) => return Some(PrincipalMatch::Direct),
                Some(other) => best = Some(other),
                None => {}
            }
        }
        best
    }
}

fn reference_match(reference: &PrincipalRef, caller: &Principal) -> Option<PrincipalMatch> {
    let direct = |named: bool| named.then_some(PrincipalMatch::Direct);
    match reference {
        PrincipalRef::Everyone => Some(PrincipalMatch::Direct),
        PrincipalRef::Account { account } if *account == caller.account => {
            Some(match caller.kind {
                PrincipalKind::Root => PrincipalMatch::Direct,
                _ => PrincipalMatch::Account,
            })
        }
        PrincipalRef::Account { .. } => None,
        PrincipalRef::Role { arn } => direct(
            *arn == caller.arn
                || matches!(&caller.kind, PrincipalKind::AssumedRole { role_arn, .. } if role_arn == arn),
        ),
        PrincipalRef::User { arn }
        | PrincipalRef::AssumedRoleSession { arn }
        | PrincipalRef::FederatedUser { arn } => direct(*arn == caller.arn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caller(arn: &str, kind: PrincipalKind) -> Principal {
        Principal {
            arn: arn.into(),
            account: "111122223333".into(),
            kind,
            user_id: "AIDAEXAMPLE".into(),
            username: None,
        }
    }

    fn session() -> Principal {
        caller(
            "arn:aws:sts::111122223333:assumed-role/Admin/s1",
            PrincipalKind::AssumedRole {
                role_arn: "arn:aws:iam::111122223333:role/Admin".into(),
                session_name: "s1".into(),
            },
        )
    }

    fn set(element: Value) -> PrincipalSet {
        parse_principal_element(&element).unwrap_or_default()
    }

    #[test]
    fn valid_and_invalid_references() {
        for ok in [
            "*",
            "111122223333",
            "arn:aws:iam::111122223333:root",
            "arn:aws:iam::111122223333:user/division/alice",
            "arn:aws:iam::111122223333:role/Admin",
            "arn:aws:sts::111122223333:assumed-role/Admin/session",
            "arn:aws-cn:iam::111122223333:role/Admin",
        ] {
            assert!(is_valid_principal_reference(ok), "{ok}");
        }
        for bad in [
            "",
            "alice",
            "11112222333",
            "arn:aws:iam::111122223333:user/*",
            "arn:aws:iam::*:root",
            "arn:aws:iam::111122223333:group/devs",
            "arn:aws:iam:us-east-1:111122223333:root",
            "arn:aws:sts::111122223333:assumed-role/Admin",
            "arn:aws:iam::111122223333:user/",
            "arn:aws:s3:::bucket",
        ] {
            assert!(!is_valid_principal_reference(bad), "{bad}");
        }
    }

    #[test]
    fn account_principal_delegates_unless_caller_is_root() {
        let account = set(json!({"AWS": "111122223333"}));
        let user = caller("arn:aws:iam::111122223333:user/alice", PrincipalKind::User);
        let root = caller("arn:aws:iam::111122223333:root", PrincipalKind::Root);
        assert_eq!(account.best_match(&user), Some(PrincipalMatch::Account));
        assert_eq!(account.best_match(&root), Some(PrincipalMatch::Direct));
        let other = Principal {
            account: "444455556666".into(),
            ..user
        };
        assert_eq!(account.best_match(&other), None);
    }

    #[test]
    fn role_covers_its_sessions_and_session_is_exact() {
        let role = set(json!({"AWS": ["arn:aws:iam::111122223333:role/Admin"]}));
        assert_eq!(role.best_match(&session()), Some(PrincipalMatch::Direct));
        let one = set(json!({"AWS": "arn:aws:sts::111122223333:assumed-role/Admin/s2"}));
        assert_eq!(one.best_match(&session()), None);
    }

    #[test]
    fn direct_beats_account_in_the_same_set() {
        let both = set(json!({"AWS": [
            "111122223333",
            "arn:aws:iam::111122223333:role/Admin"
        ]}));
        assert_eq!(both.best_match(&session()), Some(PrincipalMatch::Direct));
    }

    #[test]
    fn services_match_by_name() {
        let rds = set(json!({"Service": "rds.amazonaws.com"}));
        let service = caller(
            "rds.amazonaws.com",
            PrincipalKind::Service {
                name: "rds.amazonaws.com".into(),
            },
        );
        assert_eq!(rds.best_match(&service), Some(PrincipalMatch::Direct));
        assert_eq!(
            set(json!("*")).best_match(&service),
            Some(PrincipalMatch::Direct)
        );
        let account = set(json!({"AWS": "111122223333"}));
        assert_eq!(account.best_match(&service), None);
    }

    #[test]
    fn malformed_elements() {
        for bad in [
            json!("arn:aws:iam::111122223333:root"),
            json!({}),
            json!({"AWS": []}),
            json!({"AWS": [1]}),
            json!({"Group": "x"}),
            json!({"Service": "bad service"}),
            json!(42),
        ] {
            assert!(parse_principal_element(&bad).is_err(), "{bad}");
        }
        assert!(
            parse_principal_element(&json!({"Federated": "cognito-identity.amazonaws.com"}))
                .is_ok()
        );
    }
}
