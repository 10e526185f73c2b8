//! Policy variables: `${aws:username}`, `${key, 'default'}` and the `${*}`, `${?}`, `${$}`
//! escapes, allowed in `Resource` and in string/ARN condition values of 2012-10-17
//! policies (IAM user guide, "IAM policy elements: Variables and tags"). In 2008-10-17
//! policies the same text is an ordinary literal.

use crate::glob::{Glob, GlobStyle};
use crate::request::AuthzRequest;

/// One piece of a value that contains policy variables.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text written in the policy; `*` and `?` in it are wildcards where the operator allows.
    Text(String),
    /// `${*}`, `${?}` or `${$}`: the character itself, never a wildcard.
    Escaped(char),
    /// `${name}` or `${name, 'default'}`; `name` is stored lowercased.
    Variable {
        name: String,
        default: Option<String>,
    },
}

/// A value with at least one `${…}` in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

/// Why a `${…}` could not be parsed.
pub(crate) type TemplateError = String;

impl Template {
    /// Splits `text` into pieces; `Ok(None)` when it holds no `${`, so callers keep the fast
    /// static form.
    pub(crate) fn parse(text: &str) -> Result<Option<Template>, TemplateError> {
        if !text.contains("${") {
            return Ok(None);
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            let (before, after_dollar) = rest.split_at(start);
            if !before.is_empty() {
                pieces.push(Piece::Text(before.to_owned()));
            }
            let body_and_rest = after_dollar.get(2..).unwrap_or_default();
            let Some(end) = body_and_rest.find('}') else {
                return Err(format!("unterminated policy variable in \"{text}\""));
            };
            let (body, closing) = body_and_rest.split_at(end);
            pieces.push(parse_variable(body)?);
            rest = closing.get(1..).unwrap_or_default();
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Some(Template { pieces }))
    }

    /// The value with every variable substituted, as `(char, is_literal)` pairs for the
    /// glob compiler; `None` when a variable has no value and no default.
    fn resolve_chars(&self, request: &AuthzRequest<'_>) -> Option<Vec<(char, bool)>> {
        let mut chars = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => chars.extend(text.chars().map(|c| (c, false))),
                Piece::Escaped(c) => chars.push((*c, true)),
                Piece::Variable { name, default } => {
                    let value = request.single_value(name).or(default.as_deref())?;
                    chars.extend(value.chars().map(|c| (c, true)));
                }
            }
        }
        Some(chars)
    }

    /// The value with every variable substituted; `None` when one cannot be resolved.
    pub(crate) fn resolve(&self, request: &AuthzRequest<'_>) -> Option<String> {
        self.resolve_chars(request)
            .map(|chars| chars.into_iter().map(|(c, _)| c).collect())
    }

    /// Substitutes the variables and compiles the result; substituted text never acts as
    /// a wildcard.
    pub(crate) fn resolve_glob(
        &self,
        request: &AuthzRequest<'_>,
        style: GlobStyle,
    ) -> Option<Glob> {
        self.resolve_chars(request)
            .map(|chars| Glob::from_chars(&chars, style))
    }
}

fn parse_variable(body: &str) -> Result<Piece, TemplateError> {
    match body {
        "*" => return Ok(Piece::Escaped('*')),
        "?" => return Ok(Piece::Escaped('?')),
        "$" => return Ok(Piece::Escaped('$')),
        _ => {}
    }
    let (name, default) = match body.split_once(',') {
        Some((name, default)) => (name.trim(), Some(parse_default(default.trim())?)),
        None => (body.trim(), None),
    };
    let valid_name = !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '$' | '{' | '\'' | '*' | '?'));
    if !valid_name {
        return Err(format!("invalid policy variable \"${{{body}}}\""));
    }
    Ok(Piece::Variable {
        name: name.to_lowercase(),
        default,
    })
}

/// A default is written in single quotes: `${aws:PrincipalTag/team, 'company-wide'}`.
fn parse_default(quoted: &str) -> Result<String, TemplateError> {
    quoted
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .filter(|inner| !inner.contains('\''))
        .map(str::to_owned)
        .ok_or_else(|| format!("policy variable default must be in single quotes, got {quoted}"))
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

    fn resolve(text: &str, context: &ContextKeys) -> Option<String> {
        let principal = alice();
        let request = AuthzRequest {
            principal: &principal,
            action: "s3:GetObject",
            resource: "*",
            context,
        };
        Template::parse(text).ok().flatten()?.resolve(&request)
    }

    #[test]
    fn plain_text_is_not_a_template() {
        assert_eq!(Template::parse("abc*"), Ok(None));
    }

    #[test]
    fn variables_escapes_and_defaults() {
        let mut context = ContextKeys::new();
        context.set("aws:PrincipalTag/team", "blue");
        assert_eq!(
            resolve("home/${aws:username}/${*}${?}${$}", &context).as_deref(),
            Some("home/alice/*?$")
        );
        assert_eq!(
            resolve("${AWS:PrincipalTag/team}", &context).as_deref(),
            Some("blue")
        );
        assert_eq!(
            resolve("${aws:PrincipalTag/dept, 'none'}", &context).as_deref(),
            Some("none")
        );
        assert_eq!(resolve("${aws:PrincipalTag/dept}", &context), None);
    }

    #[test]
    fn malformed_variables_are_errors() {
        assert!(Template::parse("${aws:username").is_err());
        assert!(Template::parse("${}").is_err());
        assert!(Template::parse("${a, nodefault}").is_err());
    }

    #[test]
    fn substituted_values_are_literal_in_globs() {
        let mut context = ContextKeys::new();
        context.set("x:v", "*");
        let principal = alice();
        let request = AuthzRequest {
            principal: &principal,
            action: "s3:GetObject",
            resource: "*",
            context: &context,
        };
        let template = Template::parse("a${x:v}").ok().flatten();
        let glob = template.and_then(|t| t.resolve_glob(&request, GlobStyle::Text));
        assert!(glob.as_ref().is_some_and(|g| g.matches("a*")));
        assert!(!glob.is_some_and(|g| g.matches("ab")));
    }
}
