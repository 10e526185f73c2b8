//! Property tests: any input parses to a document or an error (never a panic), and any
//! document that parses can be evaluated.

use kura_policy::{
    AuthzRequest, ContextKeys, PolicyDocument, PolicyKind, Principal, PrincipalKind,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

const KINDS: [PolicyKind; 3] = [
    PolicyKind::Identity,
    PolicyKind::Resource,
    PolicyKind::Trust,
];

/// Words that steer generated JSON towards the policy grammar, so the parser's deeper
/// branches are reached rather than rejected at the first key.
const WORDS: &[&str] = &[
    "Version",
    "2012-10-17",
    "2008-10-17",
    "Statement",
    "Sid",
    "Effect",
    "Allow",
    "Deny",
    "Principal",
    "NotPrincipal",
    "AWS",
    "Service",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
    "*",
    "kms:*",
    "kms:Encrypt",
    "kms:Re*",
    "111122223333",
    "arn:aws:iam::111122223333:root",
    "arn:aws:iam::111122223333:role/Admin",
    "arn:aws:kms:*:111122223333:key/*",
    "arn:aws:s3:::b/${aws:username}/*",
    "StringEquals",
    "StringNotLike",
    "ForAllValues:StringLike",
    "ForAnyValue:StringEquals",
    "NumericLessThan",
    "DateGreaterThan",
    "Bool",
    "IpAddress",
    "NotIpAddress",
    "ArnLike",
    "Null",
    "StringEqualsIfExists",
    "aws:SourceIp",
    "aws:CurrentTime",
    "kms:ViaService",
    "10.0.0.0/8",
    "2026-01-01T00:00:00Z",
    "true",
    "${*}",
    "${aws:username, 'x'}",
    "${",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(WORDS).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((word(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn evaluate_everywhere(document: &PolicyDocument) {
    let principal = Principal {
        arn: "arn:aws:sts::111122223333:assumed-role/Admin/s".into(),
        account: "111122223333".into(),
        kind: PrincipalKind::AssumedRole {
            role_arn: "arn:aws:iam::111122223333:role/Admin".into(),
            session_name: "s".into(),
        },
        user_id: "AROAEXAMPLE:s".into(),
        username: None,
    };
    let mut context = ContextKeys::new();
    context.set("aws:SourceIp", "10.1.2.3");
    context.set("aws:CurrentTime", "2026-06-01T00:00:00Z");
    context.set_multi("aws:TagKeys", vec!["a".into(), "b".into()]);
    let request = AuthzRequest {
        principal: &principal,
        action: "kms:Encrypt",
        resource: "arn:aws:kms:us-east-1:111122223333:key/k",
        context: &context,
    };
    let _ = document.evaluate(&request);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        for kind in KINDS {
            if let Ok(document) = PolicyDocument::parse(&text, kind) {
                evaluate_everywhere(&document);
            }
        }
    }

    #[test]
    fn policy_shaped_json_never_panics(value in json_value()) {
        let text = value.to_string();
        for kind in KINDS {
            if let Ok(document) = PolicyDocument::parse(&text, kind) {
                evaluate_everywhere(&document);
            }
        }
    }

    #[test]
    fn generated_statements_never_panic(
        effect in proptest::sample::select(&["Allow", "Deny"][..]),
        action in word(),
        resource in word(),
        operator in word(),
        key in word(),
        values in proptest::collection::vec(word(), 1..3),
    ) {
        let statement = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": {
                "Effect": effect,
                "Principal": {"AWS": "*"},
                "Action": action,
                "Resource": resource,
                "Condition": {operator: {key: values}},
            }
        });
        if let Ok(document) = PolicyDocument::parse(&statement.to_string(), PolicyKind::Resource) {
            evaluate_everywhere(&document);
        }
    }
}
