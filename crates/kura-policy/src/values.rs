//! Typed policy values, parsed once when the policy is parsed: wildcard patterns that may
//! contain policy variables, numbers, dates, booleans, base64 and CIDR blocks. Request
//! values are parsed with the same functions at evaluation time, without allocating.

use std::net::IpAddr;

use time::format_description::well_known::{Iso8601, Rfc3339};
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use crate::glob::{Glob, GlobStyle};
use crate::request::AuthzRequest;
use crate::template::{Template, TemplateError};

/// Whether `${…}` is a policy variable (2012-10-17) or plain text (2008-10-17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VariableSupport {
    Enabled,
    Disabled,
}

/// A wildcard pattern, possibly with policy variables in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    Static(Glob),
    WithVariables(Template, GlobStyle),
}

impl Pattern {
    pub(crate) fn parse(
        text: &str,
        style: GlobStyle,
        variables: VariableSupport,
    ) -> Result<Pattern, TemplateError> {
        match parse_template(text, variables)? {
            Some(template) => Ok(Pattern::WithVariables(template, style)),
            None => Ok(Pattern::Static(Glob::new(text, style))),
        }
    }

    /// An unresolvable variable makes the pattern match nothing.
    pub(crate) fn matches(&self, value: &str, request: &AuthzRequest<'_>) -> bool {
        match self {
            Pattern::Static(glob) => glob.matches(value),
            Pattern::WithVariables(template, style) => template
                .resolve_glob(request, *style)
                .is_some_and(|glob| glob.matches(value)),
        }
    }
}

/// A string compared whole (`StringEquals` and friends), possibly with policy variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Text {
    Literal(String),
    WithVariables(Template),
}

impl Text {
    pub(crate) fn parse(text: &str, variables: VariableSupport) -> Result<Text, TemplateError> {
        Ok(match parse_template(text, variables)? {
            Some(template) => Text::WithVariables(template),
            None => Text::Literal(text.to_owned()),
        })
    }

    /// Applies `compare(policy_value, request_value)`; false when a variable is unresolvable.
    pub(crate) fn compare(
        &self,
        value: &str,
        request: &AuthzRequest<'_>,
        compare: fn(&str, &str) -> bool,
    ) -> bool {
        match self {
            Text::Literal(literal) => compare(literal, value),
            Text::WithVariables(template) => template
                .resolve(request)
                .is_some_and(|resolved| compare(&resolved, value)),
        }
    }
}

fn parse_template(
    text: &str,
    variables: VariableSupport,
) -> Result<Option<Template>, TemplateError> {
    match variables {
        VariableSupport::Enabled => Template::parse(text),
        VariableSupport::Disabled => Ok(None),
    }
}

/// Case-insensitive equality by Unicode lowercase, without allocating.
pub(crate) fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// A decimal number: optional sign, digits with an optional fraction, optional exponent.
/// Stricter than `f64::from_str`, which would also take `inf` and `NaN`.
pub(crate) fn parse_number(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok =
        !(whole.is_empty() && fraction.is_empty()) && digits(whole) && digits(fraction);
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    if !(mantissa_ok && exponent_ok) {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// A date as nanoseconds since the Unix epoch: epoch seconds, an ISO 8601 date-time
/// (with or without offset; no offset means UTC) or an ISO 8601 date (midnight UTC).
pub(crate) fn parse_date(text: &str) -> Option<i128> {
    if let Some(seconds) = parse_epoch_seconds(text) {
        return Some(i128::from(seconds) * 1_000_000_000);
    }
    let date_time = OffsetDateTime::parse(text, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(text, &Iso8601::DEFAULT))
        .or_else(|_| PrimitiveDateTime::parse(text, &Iso8601::DEFAULT).map(|dt| dt.assume_utc()))
        .or_else(|_| Date::parse(text, &Iso8601::DEFAULT).map(|d| d.midnight().assume_utc()))
        .ok()?;
    Some(date_time.unix_timestamp_nanos())
}

fn parse_epoch_seconds(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    all_digits.then(|| text.parse().ok()).flatten()
}

/// `Bool` accepts `true`/`false` in any case (IAM compares them case-insensitively).
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// `BinaryEquals` values are base64; the request carries the same encoding.
pub(crate) fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    !text.is_empty()
        && text.len() % 4 == 0
        && padding <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// An IPv4 or IPv6 block; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    pub(crate) fn parse(text: &str) -> Option<Cidr> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().ok()?;
        let max_len = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max_len,
        };
        (prefix_len <= max_len).then_some(Cidr {
            network,
            prefix_len,
        })
    }

    pub(crate) fn contains(&self, address: IpAddr) -> bool {
        let prefix = u32::from(self.prefix_len);
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                u32::from(net) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                u128::from(net) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

/// A request's source address: a bare address, or one written as a /32 or /128 block.
pub(crate) fn parse_request_ip(text: &str) -> Option<IpAddr> {
    let address = text.split_once('/').map_or(text, |(address, _)| address);
    address.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_strict() {
        assert_eq!(parse_number("10"), Some(10.0));
        assert_eq!(parse_number("-1.5e3"), Some(-1500.0));
        assert_eq!(parse_number(".5"), Some(0.5));
        for bad in ["", "inf", "NaN", "1e", "1.2.3", "0x10", " 1", "+"] {
            assert_eq!(parse_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_in_every_documented_form() {
        let midnight = 1_767_225_600i128 * 1_000_000_000; // 2026-01-01T00:00:00Z
        assert_eq!(parse_date("2026-01-01T00:00:00Z"), Some(midnight));
        assert_eq!(parse_date("2026-01-01"), Some(midnight));
        assert_eq!(parse_date("2026-01-01T00:00:00"), Some(midnight));
        assert_eq!(parse_date("2026-01-01T09:00:00+09:00"), Some(midnight));
        assert_eq!(parse_date("1767225600"), Some(midnight));
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("2026-13-01"), None);
    }

    #[test]
    fn cidr_blocks() {
        let v4 = Cidr::parse("203.0.113.0/24");
        assert!(
            v4.is_some_and(|c| c.contains("203.0.113.77".parse().unwrap_or(IpAddr::from([0; 4]))))
        );
        assert!(v4.is_some_and(|c| !c.contains(IpAddr::from([203, 0, 114, 1]))));
        let v6 = Cidr::parse("2001:DB8:1234:5678::/64");
        let inside: Option<IpAddr> = "2001:db8:1234:5678::1".parse().ok();
        assert!(v6.zip(inside).is_some_and(|(c, a)| c.contains(a)));
        assert!(v6.is_some_and(|c| !c.contains(IpAddr::from([203, 0, 113, 1]))));
        assert!(Cidr::parse("0.0.0.0/0").is_some_and(|c| c.contains(IpAddr::from([1, 2, 3, 4]))));
        for bad in ["203.0.113.0/33", "203.0.113.0/", "nope", "1.2.3.4/x"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn base64_and_bool() {
        assert!(is_base64("QmluYXJ5VmFsdWVJbkJhc2U2NA=="));
        assert!(!is_base64("not base64!"));
        assert!(!is_base64("abc"));
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn ignore_case_is_unicode_aware() {
        assert!(eq_ignore_case("ÄBC", "äbc"));
        assert!(!eq_ignore_case("abc", "abd"));
    }
}
