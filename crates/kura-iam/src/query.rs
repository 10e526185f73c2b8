//! The Query protocol as IAM and STS speak it: reading decoded parameters, paging with
//! `Marker`/`MaxItems`, list elements, URL-encoded policy documents, and the CloudTrail
//! form of the request parameters.

use base64::Engine as _;
use kura_edge::QueryParams;
use kura_edge::xml::XmlWriter;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::IamError;
use crate::model::Tag;
use crate::names::{self, invalid, missing};

/// `UserName` → `userName`: how CloudTrail and validation messages name a member.
pub(crate) fn lower_camel(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// The parameters of one request.
#[derive(Clone, Copy)]
pub(crate) struct Params<'a>(&'a QueryParams);

const DEFAULT_MAX_ITEMS: usize = 100;

impl<'a> Params<'a> {
    pub fn new(params: &'a QueryParams) -> Self {
        Self(params)
    }

    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn required(&self, name: &str) -> Result<&'a str, IamError> {
        self.get(name).ok_or_else(|| missing(&lower_camel(name)))
    }

    /// Whether any parameter is `name` or starts with `name.` (lists and structures).
    pub fn has(&self, name: &str) -> bool {
        self.0.0.iter().any(|(k, _)| {
            k == name
                || k.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, IamError> {
        match self.get(name) {
            None => Ok(None),
            Some(text) => {
                text.trim().parse::<i64>().map(Some).map_err(|_| {
                    invalid(text, &lower_camel(name), "Member must be a valid integer")
                })
            }
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, IamError> {
        match self.get(name) {
            None => Ok(None),
            Some(text) if text.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(text) if text.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(text) => Err(invalid(
                text,
                &lower_camel(name),
                "Member must be a boolean",
            )),
        }
    }

    /// `MaxItems`: 1-1000, default 100.
    pub fn max_items(&self) -> Result<usize, IamError> {
        match self.int("MaxItems")? {
            None => Ok(DEFAULT_MAX_ITEMS),
            Some(n) if n < 1 => Err(invalid(
                &n.to_string(),
                "maxItems",
                "Member must have value greater than or equal to 1",
            )),
            Some(n) if n > 1000 => Err(invalid(
                &n.to_string(),
                "maxItems",
                "Member must have value less than or equal to 1000",
            )),
            Some(n) => Ok(usize::try_from(n).unwrap_or(DEFAULT_MAX_ITEMS)),
        }
    }

    pub fn marker(&self) -> Option<&'a str> {
        self.get("Marker")
    }

    /// `Tags.member.N.Key` / `.Value`, validated as IAM does.
    pub fn tags(&self) -> Result<Vec<Tag>, IamError> {
        let mut indexed: std::collections::BTreeMap<usize, (Option<&str>, Option<&str>)> =
            Default::default();
        for (k, v) in &self.0.0 {
            let Some(rest) = k.strip_prefix("Tags.member.") else {
                continue;
            };
            let Some((index, field)) = rest.split_once('.') else {
                continue;
            };
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            let entry = indexed.entry(index).or_default();
            match field {
                "Key" => entry.0 = Some(v),
                "Value" => entry.1 = Some(v),
                _ => {}
            }
        }
        if indexed.len() > 50 {
            return Err(IamError::LimitExceeded(
                "The number of tags has reached the maximum limit.".into(),
            ));
        }
        let mut tags: Vec<Tag> = Vec::with_capacity(indexed.len());
        for (key, value) in indexed.into_values() {
            let key = key.ok_or_else(|| missing("tags.member.key"))?;
            let value = value.ok_or_else(|| missing("tags.member.value"))?;
            names::check_length(key, "tags.member.key", 1, 128)?;
            names::check_length(value, "tags.member.value", 0, 256)?;
            let allowed =
                |c: char| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c);
            if !key.chars().all(allowed) || !value.chars().all(allowed) {
                return Err(invalid(
                    key,
                    "tags.member.key",
                    "Member must satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+",
                ));
            }
            if tags.iter().any(|t| t.key.eq_ignore_ascii_case(key)) {
                return Err(IamError::InvalidInput(
                    "Duplicate tag keys found. Please note that Tag keys are case insensitive."
                        .into(),
                ));
            }
            tags.push(Tag {
                key: key.to_owned(),
                value: value.to_owned(),
            });
        }
        Ok(tags)
    }
}

/// One page of a listing.
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    /// Set when more items follow: the `Marker` to ask for them with.
    pub marker: Option<String>,
}

/// Pages `items` (sorted by their unique key) after `marker`, at most `max` of them.
pub(crate) fn paginate<T>(
    items: Vec<(String, T)>,
    marker: Option<&str>,
    max: usize,
) -> Result<Page<T>, IamError> {
    let after = match marker {
        None => None,
        Some(marker) => Some(decode_marker(marker)?),
    };
    let mut remaining = items
        .into_iter()
        .filter(|(key, _)| after.as_ref().is_none_or(|after| key > after))
        .peekable();
    let mut page = Vec::new();
    let mut last_key = None;
    while page.len() < max {
        let Some((key, item)) = remaining.next() else {
            break;
        };
        last_key = Some(key);
        page.push(item);
    }
    let marker = match (remaining.peek(), last_key) {
        (Some(_), Some(last)) => Some(encode_marker(&last)),
        _ => None,
    };
    Ok(Page {
        items: page,
        marker,
    })
}

fn encode_marker(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes())
}

fn decode_marker(marker: &str) -> Result<String, IamError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(marker)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            invalid(
                marker,
                "marker",
                "Member must be a marker returned by a previous call",
            )
        })
}

/// `<Name><member>…</member>…</Name>`
pub(crate) fn write_list<T>(
    w: &mut XmlWriter,
    name: &str,
    items: &[T],
    mut each: impl FnMut(&mut XmlWriter, &T),
) {
    w.element(name, |w| {
        for item in items {
            w.element("member", |w| each(w, item));
        }
    });
}

/// `IsTruncated` and, when truncated, `Marker`.
pub(crate) fn write_paging(w: &mut XmlWriter, marker: Option<&str>) {
    w.leaf(
        "IsTruncated",
        if marker.is_some() { "true" } else { "false" },
    );
    w.optional_leaf("Marker", marker);
}

pub(crate) fn write_tags(w: &mut XmlWriter, tags: &[Tag]) {
    if tags.is_empty() {
        return;
    }
    write_list(w, "Tags", tags, |w, tag| {
        w.leaf("Key", &tag.key).leaf("Value", &tag.value);
    });
}

/// Characters left as they are in URL-encoded policy documents: RFC 3986's unreserved.
const DOCUMENT_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Policy documents are returned URL-encoded, as AWS returns them (the SDKs decode them).
pub(crate) fn url_encode_document(document: &str) -> String {
    utf8_percent_encode(document, DOCUMENT_ENCODE_SET).to_string()
}

/// Parameters whose values are numbers or booleans in CloudTrail records.
const NUMERIC: &[&str] = &["MaxItems", "DurationSeconds", "MaxSessionDuration"];
const BOOLEAN: &[&str] = &["OnlyAttached"];

/// The request parameters as CloudTrail records them: lowerCamel member names, lists as
/// arrays; `Action`, `Version` and the members named in `omit` left out.
pub(crate) fn audit_parameters(params: &QueryParams, omit: &[&str]) -> Option<Value> {
    let mut root = Value::Object(Map::new());
    for (name, value) in &params.0 {
        if name == "Action" || name == "Version" || omit.contains(&name.as_str()) {
            continue;
        }
        let leaf = if NUMERIC.contains(&name.as_str()) {
            value
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(value.as_str()))
        } else if BOOLEAN.contains(&name.as_str()) {
            match value.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::from(value.as_str()),
            }
        } else {
            Value::from(value.as_str())
        };
        let path: Vec<&str> = name.split('.').collect();
        insert(&mut root, &path, leaf);
    }
    match &root {
        Value::Object(map) if map.is_empty() => None,
        _ => Some(root),
    }
}

fn insert(node: &mut Value, path: &[&str], leaf: Value) {
    let Some((first, rest)) = path.split_first() else {
        *node = leaf;
        return;
    };
    if *first == "member"
        && let Some((index, rest)) = rest.split_first()
        && let Ok(index) = index.parse::<usize>()
        && (1..=1000).contains(&index)
    {
        if !node.is_array() {
            *node = Value::Array(Vec::new());
        }
        if let Value::Array(items) = node {
            if items.len() < index {
                items.resize(index, Value::Null);
            }
            if let Some(slot) = items.get_mut(index - 1) {
                insert(slot, rest, leaf);
            }
        }
        return;
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        let slot = map.entry(lower_camel(first)).or_insert(Value::Null);
        insert(slot, rest, leaf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_walks_every_item_once() {
        let items: Vec<(String, usize)> = (0..7).map(|i| (format!("k{i}"), i)).collect();
        let mut marker: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let page = paginate(items.clone(), marker.as_deref(), 3).unwrap_or(Page {
                items: vec![],
                marker: None,
            });
            seen.extend(page.items);
            match page.marker {
                Some(next) => marker = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        let exact = paginate(items.clone(), None, 7).map(|p| p.marker.is_none());
        assert!(matches!(exact, Ok(true)));
        assert!(paginate(items, Some("%%%"), 3).is_err());
    }

    #[test]
    fn audit_parameters_are_lower_camel_with_arrays() {
        let p = QueryParams::from_pairs(&[
            ("Action", "CreateUser"),
            ("Version", "2010-05-08"),
            ("UserName", "alice"),
            ("Tags.member.1.Key", "team"),
            ("Tags.member.1.Value", "blue"),
            ("MaxItems", "5"),
        ]);
        let value = audit_parameters(&p, &[]).unwrap_or_default();
        assert_eq!(
            value,
            serde_json::json!({"userName": "alice", "tags": [{"key": "team", "value": "blue"}], "maxItems": 5})
        );
        assert!(
            audit_parameters(&QueryParams::from_pairs(&[("Action", "ListUsers")]), &[]).is_none()
        );
    }

    #[test]
    fn tags_and_lists() {
        let p = QueryParams::from_pairs(&[
            ("Tags.member.2.Key", "b"),
            ("Tags.member.2.Value", "2"),
            ("Tags.member.1.Key", "a"),
            ("Tags.member.1.Value", "1"),
        ]);
        let p = Params::new(&p);
        let tags = p.tags().unwrap_or_default();
        assert_eq!(
            tags.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(p.has("Tags") && !p.has("Tag"));
        let duplicate = QueryParams::from_pairs(&[
            ("Tags.member.1.Key", "a"),
            ("Tags.member.1.Value", "1"),
            ("Tags.member.2.Key", "A"),
            ("Tags.member.2.Value", "2"),
        ]);
        assert!(Params::new(&duplicate).tags().is_err());
    }

    #[test]
    fn documents_are_url_encoded() {
        assert_eq!(
            url_encode_document(r#"{"A": "b*"}"#),
            "%7B%22A%22%3A%20%22b%2A%22%7D"
        );
    }
}
