//! Parses arbitrary bytes as every kind of policy and evaluates whatever parses against a
//! fixed request. Any panic, hang or sanitizer report is a bug in kura-policy.
#![no_main]

use kura_policy::{
    AuthzRequest, ContextKeys, PolicyDocument, PolicyKind, Principal, PrincipalKind,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let principal = Principal {
        arn: "arn:aws:sts::111122223333:assumed-role/Admin/fuzz".into(),
        account: "111122223333".into(),
        kind: PrincipalKind::AssumedRole {
            role_arn: "arn:aws:iam::111122223333:role/Admin".into(),
            session_name: "fuzz".into(),
        },
        user_id: "AROAEXAMPLE:fuzz".into(),
        username: None,
    };
    let mut context = ContextKeys::new();
    context.set("aws:SourceIp", "10.1.2.3");
    context.set("aws:CurrentTime", "2026-06-01T00:00:00Z");
    context.set("kms:CallerAccount", "111122223333");
    context.set_multi("kms:EncryptionContextKeys", vec!["aws:rds:db-id".into()]);
    let request = AuthzRequest {
        principal: &principal,
        action: "kms:Decrypt",
        resource: "arn:aws:kms:us-east-1:111122223333:key/1234abcd",
        context: &context,
    };
    for kind in [
        PolicyKind::Identity,
        PolicyKind::Resource,
        PolicyKind::Trust,
    ] {
        if let Ok(document) = PolicyDocument::parse(&text, kind) {
            let _ = document.evaluate(&request);
        }
    }
});
