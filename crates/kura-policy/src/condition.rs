//! The `Condition` element: operators, set qualifiers, `IfExists`, and their evaluation.
//!
//! Rules (IAM user guide, "Condition operators" and "Conditions with multiple context keys
//! or values"): operators are ANDed, keys within an operator are ANDed, the values of one
//! key are ORed, and for a negated operator they are NORed ("matches none of them"). A key
//! missing from the request makes a positive operator false and a negated one true, except
//! that `…IfExists` is true on a missing key and `Null` tests presence itself.
//! `ForAllValues:` is true on a missing (or empty) key; `ForAnyValue:` is false.

use std::cmp::Ordering;

use serde_json::Value;

use crate::glob::GlobStyle;
use crate::request::AuthzRequest;
use crate::values::{
    Cidr, Pattern, Text, VariableSupport, eq_ignore_case, is_base64, parse_bool, parse_date,
    parse_number, parse_request_ip,
};

/// How a condition treats a multi-valued request key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    /// No qualifier: the key is expected to be single-valued.
    None,
    /// `ForAllValues:` — every request value must satisfy the operator.
    ForAllValues,
    /// `ForAnyValue:` — at least one request value must satisfy the operator.
    ForAnyValue,
}

/// Which comparison a numeric or date operator makes (request value vs policy value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Comparison {
    fn holds(self, ordering: Option<Ordering>) -> bool {
        match (self, ordering) {
            (_, None) => false,
            (Comparison::Equal, Some(o)) => o == Ordering::Equal,
            (Comparison::Less, Some(o)) => o == Ordering::Less,
            (Comparison::LessOrEqual, Some(o)) => o != Ordering::Greater,
            (Comparison::Greater, Some(o)) => o == Ordering::Greater,
            (Comparison::GreaterOrEqual, Some(o)) => o != Ordering::Less,
        }
    }
}

/// The positive test of one operator, with the policy's values already parsed.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    StringEquals(Vec<Text>),
    StringEqualsIgnoreCase(Vec<Text>),
    StringLike(Vec<Pattern>),
    Numeric(Comparison, Vec<f64>),
    Date(Comparison, Vec<i128>),
    Bool(Vec<bool>),
    Binary(Vec<String>),
    IpAddress(Vec<Cidr>),
    Arn(Vec<Pattern>),
    /// `Null`: each value is `true` ("the key is absent") or `false` ("the key is present").
    Null(Vec<bool>),
}

/// The operator families, before their values are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Numeric(Comparison),
    Date(Comparison),
    Bool,
    Binary,
    IpAddress,
    Arn,
    Null,
}

/// Every base operator name AWS documents, with its family and whether it is negated.
const OPERATORS: &[(&str, Family, bool)] = &[
    ("StringEquals", Family::StringEquals, false),
    ("StringNotEquals", Family::StringEquals, true),
    (
        "StringEqualsIgnoreCase",
        Family::StringEqualsIgnoreCase,
        false,
    ),
    (
        "StringNotEqualsIgnoreCase",
        Family::StringEqualsIgnoreCase,
        true,
    ),
    ("StringLike", Family::StringLike, false),
    ("StringNotLike", Family::StringLike, true),
    ("NumericEquals", Family::Numeric(Comparison::Equal), false),
    ("NumericNotEquals", Family::Numeric(Comparison::Equal), true),
    ("NumericLessThan", Family::Numeric(Comparison::Less), false),
    (
        "NumericLessThanEquals",
        Family::Numeric(Comparison::LessOrEqual),
        false,
    ),
    (
        "NumericGreaterThan",
        Family::Numeric(Comparison::Greater),
        false,
    ),
    (
        "NumericGreaterThanEquals",
        Family::Numeric(Comparison::GreaterOrEqual),
        false,
    ),
    ("DateEquals", Family::Date(Comparison::Equal), false),
    ("DateNotEquals", Family::Date(Comparison::Equal), true),
    ("DateLessThan", Family::Date(Comparison::Less), false),
    (
        "DateLessThanEquals",
        Family::Date(Comparison::LessOrEqual),
        false,
    ),
    ("DateGreaterThan", Family::Date(Comparison::Greater), false),
    (
        "DateGreaterThanEquals",
        Family::Date(Comparison::GreaterOrEqual),
        false,
    ),
    ("Bool", Family::Bool, false),
    ("BinaryEquals", Family::Binary, false),
    ("IpAddress", Family::IpAddress, false),
    ("NotIpAddress", Family::IpAddress, true),
    ("ArnEquals", Family::Arn, false),
    ("ArnLike", Family::Arn, false),
    ("ArnNotEquals", Family::Arn, true),
    ("ArnNotLike", Family::Arn, true),
    ("Null", Family::Null, false),
];

/// One `Operator: { Key: Values }` pair, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Clause {
    qualifier: SetQualifier,
    if_exists: bool,
    negated: bool,
    /// Lowercased: condition key names are case-insensitive.
    key: String,
    test: Test,
}

/// Parses a whole `Condition` element. Errors are plain reasons; the caller adds where.
pub(crate) fn parse_condition(
    element: &Value,
    variables: VariableSupport,
) -> Result<Vec<Clause>, String> {
    let Value::Object(operators) = element else {
        return Err("the Condition element must be an object".into());
    };
    let mut clauses = Vec::new();
    for (operator, keys) in operators {
        let Value::Object(keys) = keys else {
            return Err(format!(
                "the value of {operator} must be an object of condition keys"
            ));
        };
        if keys.is_empty() {
            return Err(format!("{operator} names no condition key"));
        }
        let (qualifier, if_exists, family, negated) = parse_operator(operator)?;
        for (key, values) in keys {
            let values = condition_values(operator, key, values)?;
            let test = parse_test(family, &values, variables)
                .map_err(|reason| format!("{operator} {key}: {reason}"))?;
            clauses.push(Clause {
                qualifier,
                if_exists,
                negated,
                key: key.to_lowercase(),
                test,
            });
        }
    }
    Ok(clauses)
}

/// Splits `ForAllValues:StringLikeIfExists` into its qualifier, suffix and base operator.
fn parse_operator(name: &str) -> Result<(SetQualifier, bool, Family, bool), String> {
    let (qualifier, rest) = if let Some(rest) = name.strip_prefix("ForAllValues:") {
        (SetQualifier::ForAllValues, rest)
    } else if let Some(rest) = name.strip_prefix("ForAnyValue:") {
        (SetQualifier::ForAnyValue, rest)
    } else {
        (SetQualifier::None, name)
    };
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (rest, false),
    };
    let unknown = || format!("Invalid Condition type : {name}");
    let &(_, family, negated) = OPERATORS
        .iter()
        .find(|(known, _, _)| *known == base)
        .ok_or_else(unknown)?;
    if family == Family::Null && (if_exists || qualifier != SetQualifier::None) {
        return Err(unknown());
    }
    Ok((qualifier, if_exists, family, negated))
}

/// A key's values as strings: JSON strings, numbers and booleans, alone or in an array.
fn condition_values(operator: &str, key: &str, values: &Value) -> Result<Vec<String>, String> {
    let scalar = |value: &Value| match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!(
            "{operator} {key}: condition values must be strings, numbers or booleans"
        )),
    };
    match values {
        Value::Array(items) if items.is_empty() => Err(format!("{operator} {key}: no value given")),
        Value::Array(items) => items.iter().map(scalar).collect(),
        single => Ok(vec![scalar(single)?]),
    }
}

fn parse_test(
    family: Family,
    values: &[String],
    variables: VariableSupport,
) -> Result<Test, String> {
    let texts = || {
        values
            .iter()
            .map(|v| Text::parse(v, variables))
            .collect::<Result<Vec<_>, _>>()
    };
    let patterns = |style| {
        values
            .iter()
            .map(|v| Pattern::parse(v, style, variables))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match family {
        Family::StringEquals => Test::StringEquals(texts()?),
        Family::StringEqualsIgnoreCase => Test::StringEqualsIgnoreCase(texts()?),
        Family::StringLike => Test::StringLike(patterns(GlobStyle::Text)?),
        Family::Arn => Test::Arn(patterns(GlobStyle::ConditionArn)?),
        Family::Numeric(cmp) => Test::Numeric(cmp, typed(values, "number", parse_number)?),
        Family::Date(cmp) => Test::Date(cmp, typed(values, "date", parse_date)?),
        Family::Bool => Test::Bool(typed(values, "boolean", parse_bool)?),
        Family::Null => Test::Null(typed(values, "boolean", parse_bool)?),
        Family::IpAddress => {
            Test::IpAddress(typed(values, "IP address or CIDR block", Cidr::parse)?)
        }
        Family::Binary => Test::Binary(typed(values, "base64 value", |v| {
            is_base64(v).then(|| v.to_owned())
        })?),
    })
}

fn typed<T>(
    values: &[String],
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, String> {
    values
        .iter()
        .map(|v| parse(v).ok_or_else(|| format!("\"{v}\" is not a valid {what}")))
        .collect()
}

impl Clause {
    /// Whether this clause holds for the request.
    pub(crate) fn holds(&self, request: &AuthzRequest<'_>) -> bool {
        let present = request.key_values(&self.key);
        if let Test::Null(expect_absent) = &self.test {
            return expect_absent
                .iter()
                .any(|&absent| absent == present.is_none());
        }
        let Some(values) = present else {
            return self.holds_when_missing();
        };
        let satisfies = |value: &str| self.test.any_value_matches(value, request) != self.negated;
        match self.qualifier {
            SetQualifier::ForAllValues => values.all(satisfies),
            SetQualifier::ForAnyValue => values.any(satisfies),
            // Unqualified on a multi-valued key: positive if any value matches; negated if none does.
            SetQualifier::None => {
                values.any(|value| self.test.any_value_matches(value, request)) != self.negated
            }
        }
    }

    fn holds_when_missing(&self) -> bool {
        if self.if_exists {
            return true;
        }
        match self.qualifier {
            SetQualifier::ForAllValues => true,
            SetQualifier::ForAnyValue => false,
            SetQualifier::None => self.negated,
        }
    }
}

impl Test {
    /// The positive test: does the request `value` match at least one policy value?
    fn any_value_matches(&self, value: &str, request: &AuthzRequest<'_>) -> bool {
        match self {
            Test::StringEquals(texts) => texts.iter().any(|t| t.compare(value, request, str_eq)),
            Test::StringEqualsIgnoreCase(texts) => texts
                .iter()
                .any(|t| t.compare(value, request, eq_ignore_case)),
            Test::StringLike(patterns) | Test::Arn(patterns) => {
                patterns.iter().any(|p| p.matches(value, request))
            }
            Test::Numeric(cmp, numbers) => parse_number(value)
                .is_some_and(|n| numbers.iter().any(|p| cmp.holds(n.partial_cmp(p)))),
            Test::Date(cmp, dates) => {
                parse_date(value).is_some_and(|d| dates.iter().any(|p| cmp.holds(Some(d.cmp(p)))))
            }
            Test::Bool(bools) => parse_bool(value).is_some_and(|b| bools.contains(&b)),
            Test::Binary(encoded) => encoded.iter().any(|e| e == value),
            Test::IpAddress(blocks) => {
                parse_request_ip(value).is_some_and(|ip| blocks.iter().any(|b| b.contains(ip)))
            }
            Test::Null(_) => false,
        }
    }
}

fn str_eq(a: &str, b: &str) -> bool {
    a == b
}

/// Test access to the compiled key name.
#[cfg(test)]
impl Clause {
    fn key_name(&self) -> &str {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{ContextKeys, Principal, PrincipalKind};
    use serde_json::json;

    fn principal() -> Principal {
        Principal {
            arn: "arn:aws:iam::111122223333:user/alice".into(),
            account: "111122223333".into(),
            kind: PrincipalKind::User,
            user_id: "AIDAEXAMPLE".into(),
            username: Some("alice".into()),
        }
    }

    fn holds(condition: Value, context: &ContextKeys) -> Result<bool, String> {
        let clauses = parse_condition(&condition, VariableSupport::Enabled)?;
        let principal = principal();
        let request = AuthzRequest {
            principal: &principal,
            action: "kms:Encrypt",
            resource: "*",
            context,
        };
        Ok(clauses.iter().all(|c| c.holds(&request)))
    }

    fn single(name: &str, value: &str) -> ContextKeys {
        let mut keys = ContextKeys::new();
        keys.set(name, value);
        keys
    }

    #[test]
    fn missing_key_positive_false_negated_true() -> Result<(), String> {
        let none = ContextKeys::new();
        assert!(!holds(json!({"StringEquals": {"k:a": "x"}}), &none)?);
        assert!(holds(json!({"StringNotEquals": {"k:a": "x"}}), &none)?);
        assert!(holds(json!({"StringEqualsIfExists": {"k:a": "x"}}), &none)?);
        assert!(holds(
            json!({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
            &none
        )?);
        assert!(holds(
            json!({"ArnNotLike": {"aws:SourceArn": "arn:*"}}),
            &none
        )?);
        Ok(())
    }

    #[test]
    fn negated_operator_with_several_values_is_nor() -> Result<(), String> {
        let cond = json!({"StringNotEquals": {"k:a": ["x", "y"]}});
        assert!(!holds(cond.clone(), &single("k:a", "x"))?);
        assert!(!holds(cond.clone(), &single("k:a", "y"))?);
        assert!(holds(cond, &single("k:a", "z"))?);
        Ok(())
    }

    #[test]
    fn null_tests_presence() -> Result<(), String> {
        let absent = json!({"Null": {"aws:TokenIssueTime": "true"}});
        assert!(holds(absent.clone(), &ContextKeys::new())?);
        assert!(!holds(absent, &single("aws:TokenIssueTime", "x"))?);
        let present = json!({"Null": {"aws:TokenIssueTime": false}});
        assert!(holds(present, &single("aws:tokenissuetime", "x"))?);
        Ok(())
    }

    #[test]
    fn typed_values_are_checked_at_parse_time() {
        let bad = [
            json!({"NumericLessThan": {"k:n": "ten"}}),
            json!({"DateLessThan": {"aws:CurrentTime": "soon"}}),
            json!({"Bool": {"aws:SecureTransport": "yes"}}),
            json!({"IpAddress": {"aws:SourceIp": "300.1.1.1/8"}}),
            json!({"BinaryEquals": {"k:b": "%%%"}}),
            json!({"StringEqualz": {"k:a": "x"}}),
            json!({"NullIfExists": {"k:a": "true"}}),
            json!({"ForAnyValue:Null": {"k:a": "true"}}),
            json!({"StringEquals": {}}),
            json!({"StringEquals": {"k:a": []}}),
            json!({"StringEquals": {"k:a": {"x": 1}}}),
            json!({"StringEquals": {"k:a": "${unterminated"}}),
            json!(["StringEquals"]),
        ];
        for condition in bad {
            assert!(
                parse_condition(&condition, VariableSupport::Enabled).is_err(),
                "{condition}"
            );
        }
    }

    #[test]
    fn key_names_are_lowercased() -> Result<(), String> {
        let clauses = parse_condition(
            &json!({"StringEquals": {"kms:EncryptionContext:AppName": "x"}}),
            VariableSupport::Enabled,
        )?;
        assert_eq!(
            clauses.first().map(Clause::key_name),
            Some("kms:encryptioncontext:appname")
        );
        Ok(())
    }

    #[test]
    fn unqualified_multi_valued_key() -> Result<(), String> {
        let mut keys = ContextKeys::new();
        keys.set_multi("k:m", vec!["a".into(), "b".into()]);
        assert!(holds(json!({"StringEquals": {"k:m": "b"}}), &keys)?);
        assert!(!holds(json!({"StringNotEquals": {"k:m": "b"}}), &keys)?);
        assert!(holds(json!({"StringNotEquals": {"k:m": "c"}}), &keys)?);
        Ok(())
    }

    #[test]
    fn numeric_and_date_comparisons() -> Result<(), String> {
        assert!(holds(
            json!({"NumericLessThan": {"k:n": 10}}),
            &single("k:n", "9.5")
        )?);
        assert!(!holds(
            json!({"NumericLessThan": {"k:n": 10}}),
            &single("k:n", "10")
        )?);
        assert!(holds(
            json!({"NumericLessThanEquals": {"k:n": 10}}),
            &single("k:n", "10")
        )?);
        assert!(!holds(
            json!({"NumericEquals": {"k:n": 10}}),
            &single("k:n", "ten")
        )?);
        let time = single("aws:CurrentTime", "2026-06-01T12:00:00Z");
        assert!(holds(
            json!({"DateGreaterThan": {"aws:CurrentTime": "2026-01-01"}}),
            &time
        )?);
        assert!(holds(
            json!({"DateLessThan": {"aws:CurrentTime": "2027-01-01T00:00:00Z"}}),
            &time
        )?);
        assert!(!holds(
            json!({"DateEquals": {"aws:CurrentTime": "2026-06-01"}}),
            &time
        )?);
        Ok(())
    }
}
