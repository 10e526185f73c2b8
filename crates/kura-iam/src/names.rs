//! IAM's rules for names, paths and ARNs, with AWS's validation messages.

use crate::IamError;

/// The `ValidationError` message AWS's request validation produces.
pub(crate) fn invalid(value: &str, member: &str, constraint: &str) -> IamError {
    IamError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
    ))
}

/// A required member that is missing.
pub(crate) fn missing(member: &str) -> IamError {
    IamError::Validation(format!(
        "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
    ))
}

pub(crate) fn check_length(
    value: &str,
    member: &str,
    min: usize,
    max: usize,
) -> Result<(), IamError> {
    let length = value.chars().count();
    if length < min {
        return Err(invalid(
            value,
            member,
            &format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if length > max {
        return Err(invalid(
            value,
            member,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

/// User, role and policy names: `[\w+=,.@-]+` of `min..=max` characters.
pub(crate) fn check_name(value: &str, member: &str, max: usize) -> Result<(), IamError> {
    check_length(value, member, 1, max)?;
    if value.chars().all(is_name_char) {
        Ok(())
    } else {
        Err(invalid(
            value,
            member,
            "Member must satisfy regular expression pattern: [\\w+=,.@-]+",
        ))
    }
}

/// RoleSessionName: 2-64 of `[\w+=,.@-]`.
pub(crate) fn check_session_name(value: &str) -> Result<(), IamError> {
    check_length(value, "roleSessionName", 2, 64)?;
    if value.chars().all(is_name_char) {
        Ok(())
    } else {
        Err(invalid(
            value,
            "roleSessionName",
            "Member must satisfy regular expression pattern: [\\w+=,.@-]*",
        ))
    }
}

/// User and role paths: `/` or `/…/` of printable ASCII, at most 512 characters.
pub(crate) fn check_path(value: &str) -> Result<(), IamError> {
    check_length(value, "path", 1, 512)?;
    let shaped = value == "/"
        || (value.len() >= 3
            && value.starts_with('/')
            && value.ends_with('/')
            && value.chars().all(|c| ('\u{21}'..='\u{7e}').contains(&c)));
    if shaped {
        Ok(())
    } else {
        Err(invalid(
            value,
            "path",
            "Member must satisfy regular expression pattern: (\\u002F)|(\\u002F[\\u0021-\\u007E]+\\u002F)",
        ))
    }
}

/// Policy paths: `((/[A-Za-z0-9\.,\+@=_-]+)*)/`.
pub(crate) fn check_policy_path(value: &str, member: &str) -> Result<(), IamError> {
    check_length(value, member, 1, 512)?;
    let part_ok = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".,+@=_-".contains(c))
    };
    let shaped = value == "/"
        || value
            .strip_prefix('/')
            .and_then(|rest| rest.strip_suffix('/'))
            .is_some_and(|inner| inner.split('/').all(part_ok));
    if shaped {
        Ok(())
    } else {
        Err(invalid(
            value,
            member,
            "Member must satisfy regular expression pattern: ((/[A-Za-z0-9\\.,\\+@=_-]+)*)/",
        ))
    }
}

/// `PathPrefix` of ListUsers/ListRoles: `\u002F[\u0021-\u007F]*`.
pub(crate) fn check_path_prefix(value: &str) -> Result<(), IamError> {
    check_length(value, "pathPrefix", 1, 512)?;
    if value.starts_with('/') && value.chars().all(|c| ('\u{21}'..='\u{7f}').contains(&c)) {
        Ok(())
    } else {
        Err(invalid(
            value,
            "pathPrefix",
            "Member must satisfy regular expression pattern: \\u002F[\\u0021-\\u007F]*",
        ))
    }
}

/// Policy documents: 1-131072 characters of tab, newline, carriage return and
/// `\u0020-\u00FF`.
pub(crate) fn check_document_text(value: &str, member: &str) -> Result<(), IamError> {
    check_length(value, member, 1, 131_072)?;
    let allowed = |c: char| matches!(c, '\t' | '\n' | '\r') || ('\u{20}'..='\u{ff}').contains(&c);
    if value.chars().all(allowed) {
        Ok(())
    } else {
        Err(invalid(
            "<document>",
            member,
            "Member must satisfy regular expression pattern: [\\u0009\\u000A\\u000D\\u0020-\\u00FF]+",
        ))
    }
}

/// The case-insensitive key under which IAM keeps a name unique in an account.
pub(crate) fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// An IAM entity ARN, `arn:aws:iam::ACCOUNT:KIND/PATH/NAME`, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntityArn<'a> {
    /// The 12-digit account, or `aws` for AWS managed policies.
    pub account: &'a str,
    /// `user`, `role` or `policy`.
    pub kind: &'a str,
    /// `/` or `/a/b/`.
    pub path: String,
    pub name: &'a str,
}

pub(crate) fn parse_entity_arn(arn: &str) -> Option<EntityArn<'_>> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, resource) = rest.split_once(':')?;
    let account_ok =
        account == "aws" || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
    if !account_ok {
        return None;
    }
    let (kind, path_and_name) = resource.split_once('/')?;
    let (path, name) = match path_and_name.rsplit_once('/') {
        Some((path, name)) => (format!("/{path}/"), name),
        None => ("/".to_owned(), path_and_name),
    };
    if name.is_empty() || path.contains("//") {
        return None;
    }
    Some(EntityArn {
        account,
        kind,
        path,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(check_name("alice+ops@example.com", "userName", 64).is_ok());
        assert!(check_name("", "userName", 64).is_err());
        assert!(check_name("bad name", "userName", 64).is_err());
        assert!(check_name(&"a".repeat(65), "userName", 64).is_err());
        assert!(check_name(&"a".repeat(128), "policyName", 128).is_ok());
        assert!(check_path("/").is_ok());
        assert!(check_path("/division/team/").is_ok());
        assert!(check_path("division/").is_err());
        assert!(check_path("/division").is_err());
        assert!(check_policy_path("/a/b/", "path").is_ok());
        assert!(check_policy_path("/", "path").is_ok());
        assert!(check_policy_path("/a//b/", "path").is_err());
        assert!(check_policy_path("/a b/", "path").is_err());
        assert!(check_session_name("s").is_err());
        assert!(check_session_name("botocore-session-1700000000").is_ok());
        assert!(check_path_prefix("/").is_ok());
        assert!(check_path_prefix("x").is_err());
    }

    #[test]
    fn validation_messages_read_like_aws() {
        let message = check_name("bad name", "userName", 64)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            message,
            "1 validation error detected: Value 'bad name' at 'userName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+"
        );
    }

    #[test]
    fn entity_arns() {
        assert_eq!(
            parse_entity_arn("arn:aws:iam::111122223333:user/division/alice"),
            Some(EntityArn {
                account: "111122223333",
                kind: "user",
                path: "/division/".into(),
                name: "alice"
            })
        );
        let managed = parse_entity_arn("arn:aws:iam::aws:policy/AdministratorAccess");
        assert_eq!(
            managed.map(|a| (a.account, a.path)),
            Some(("aws", "/".into()))
        );
        assert!(parse_entity_arn("arn:aws:iam::111122223333:user/").is_none());
        assert!(parse_entity_arn("arn:aws:iam::1111:user/x").is_none());
        assert!(parse_entity_arn("arn:aws:kms:us-east-1:111122223333:key/x").is_none());
    }
}
