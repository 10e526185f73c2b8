//! Measures one authorization decision of the size kura's KMS makes: a 20-statement key
//! policy plus 10 identity policies (3 statements each), with conditions and a policy
//! variable. Prints nanoseconds per decision; it asserts nothing.
//!
//! Run: `cargo run --release -p kura-policy --example bench`

use std::hint::black_box;
use std::time::Instant;

use kura_policy::{
    AuthzRequest, ContextKeys, Evaluation, PolicyDocument, PolicyError, PolicyKind, Principal,
    PrincipalKind, evaluate_all,
};

const KEY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn key_policy() -> String {
    let mut statements = vec![
        r#"{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#.to_owned(),
        r#"{"Sid":"Allow access for Key Administrators","Effect":"Allow","Principal":{"AWS":["arn:aws:iam::111122223333:role/KeyAdmin","arn:aws:iam::111122223333:user/ops"]},"Action":["kms:Create*","kms:Describe*","kms:Enable*","kms:List*","kms:Put*","kms:Update*","kms:Revoke*","kms:Disable*","kms:Get*","kms:Delete*","kms:TagResource","kms:UntagResource","kms:ScheduleKeyDeletion","kms:CancelKeyDeletion"],"Resource":"*"}"#.to_owned(),
        r#"{"Sid":"Allow attachment of persistent resources","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/App"},"Action":["kms:CreateGrant","kms:ListGrants","kms:RevokeGrant"],"Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":"true"}}}"#.to_owned(),
        r#"{"Sid":"Via RDS","Effect":"Allow","Principal":{"AWS":"*"},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:CreateGrant","kms:ListGrants","kms:DescribeKey"],"Resource":"*","Condition":{"StringEquals":{"kms:ViaService":"rds.us-east-1.amazonaws.com","kms:CallerAccount":"111122223333"}}}"#.to_owned(),
        r#"{"Sid":"DenyOutsiders","Effect":"Deny","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*","Condition":{"StringNotEquals":{"kms:CallerAccount":["111122223333","444455556666"]}}}"#.to_owned(),
        r#"{"Sid":"DenyOldTls","Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}"#.to_owned(),
    ];
    for n in statements.len()..20 {
        statements.push(format!(
            r#"{{"Sid":"KeyUser{n}","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::444455556666:role/User{n}"}},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*","Condition":{{"StringEquals":{{"kms:EncryptionContext:aws:rds:db-id":"db-{n}"}},"IpAddress":{{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}}}}}"#
        ));
    }
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        statements.join(",")
    )
}

fn identity_policy(n: usize) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[
          {{"Sid":"Use{n}","Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:GenerateDataKey*"],"Resource":"arn:aws:kms:us-east-1:111122223333:key/*","Condition":{{"StringLike":{{"kms:RequestAlias":"alias/team{n}-*"}}}}}},
          {{"Sid":"Home{n}","Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::bucket/home/${{aws:username}}/*"}},
          {{"Sid":"NoDelete{n}","Effect":"Deny","Action":"kms:ScheduleKeyDeletion","Resource":"*","Condition":{{"DateLessThan":{{"aws:CurrentTime":"2020-01-01T00:00:00Z"}}}}}}]}}"#
    )
}

/// Average nanoseconds per call of `f`, after a warm-up.
fn time_per_call<T>(request: &AuthzRequest<'_>, f: impl Fn(&AuthzRequest<'_>) -> T) -> u128 {
    for _ in 0..10_000 {
        black_box(f(black_box(request)));
    }
    let iterations = 200_000u32;
    let started = Instant::now();
    for _ in 0..iterations {
        black_box(f(black_box(request)));
    }
    started.elapsed().as_nanos() / u128::from(iterations)
}

fn main() -> Result<(), PolicyError> {
    let key_policy = PolicyDocument::parse(&key_policy(), PolicyKind::Resource)?;
    let identity = (0..10)
        .map(|n| PolicyDocument::parse(&identity_policy(n), PolicyKind::Identity))
        .collect::<Result<Vec<_>, _>>()?;
    let caller = Principal {
        arn: "arn:aws:sts::111122223333:assumed-role/App/i-0abc".into(),
        account: "111122223333".into(),
        kind: PrincipalKind::AssumedRole {
            role_arn: "arn:aws:iam::111122223333:role/App".into(),
            session_name: "i-0abc".into(),
        },
        user_id: "AROAEXAMPLE:i-0abc".into(),
        username: None,
    };
    let mut context = ContextKeys::new();
    context.set("kms:CallerAccount", "111122223333");
    context.set("kms:ViaService", "rds.us-east-1.amazonaws.com");
    context.set("aws:SecureTransport", "true");
    context.set("aws:SourceIp", "10.1.2.3");
    context.set("aws:CurrentTime", "2026-06-01T12:00:00Z");
    context.set("kms:EncryptionContext:aws:rds:db-id", "db-7");
    context.set_multi("kms:EncryptionContextKeys", vec!["aws:rds:db-id".into()]);
    let request = AuthzRequest {
        principal: &caller,
        action: "kms:GenerateDataKeyWithoutPlaintext",
        resource: KEY_ARN,
        context: &context,
    };

    let decide = |request: &AuthzRequest<'_>| {
        let key = key_policy.evaluate(request);
        let iam = evaluate_all(&identity, request);
        (key, iam)
    };
    let (key, iam) = decide(&request);
    println!("key policy: {key:?}\nidentity policies: {iam:?}");
    assert!(matches!(key, Evaluation::Allow { .. }));

    let key_only = |request: &AuthzRequest<'_>| key_policy.evaluate(request);
    let identity_only = |request: &AuthzRequest<'_>| evaluate_all(&identity, request);
    let whole = time_per_call(&request, decide);
    let key_ns = time_per_call(&request, key_only);
    let identity_ns = time_per_call(&request, identity_only);
    println!(
        "{whole} ns per decision (20-statement key policy: {key_ns} ns, 10 identity policies: \
         {identity_ns} ns), about {} decisions/s on one core",
        1_000_000_000 / whole.max(1)
    );
    Ok(())
}
