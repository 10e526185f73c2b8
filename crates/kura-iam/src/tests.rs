//! Unit tests of the IAM service: records, state changes, authorization, paging and
//! sessions, driven through the same entry points the edge uses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};

use kura_edge::{AuditDetails, Caller, QueryParams, RequestContext};
use kura_types::{ManualClock, Region, SystemClock};

use super::*;

const A: &str = "111122223333";
const B: &str = "444455556666";

fn account(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

struct Fixture {
    iam: Arc<Iam>,
    clock: Arc<ManualClock>,
    store: Arc<Store>,
    root: Arc<RootKey>,
}

impl Fixture {
    fn new() -> Self {
        let store = Arc::new(Store::in_memory().unwrap());
        let root = Arc::new(RootKey::from_secret(&SecretBytes::zeroed(32)).unwrap());
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_800_000_000)));
        let iam = Arc::new(Iam::open(store.clone(), root.clone(), clock.clone()).unwrap());
        for id in [A, B] {
            iam.ensure_account(&account(id)).unwrap();
        }
        iam.ensure_user(&account(A), "admin", &[ADMINISTRATOR_ACCESS.to_owned()])
            .unwrap();
        iam.ensure_user(&account(A), "nobody", &[]).unwrap();
        iam.ensure_user(&account(B), "admin", &[ADMINISTRATOR_ACCESS.to_owned()])
            .unwrap();
        Self {
            iam,
            clock,
            store,
            root,
        }
    }

    fn reopen(&self) -> Arc<Iam> {
        Arc::new(Iam::open(self.store.clone(), self.root.clone(), self.clock.clone()).unwrap())
    }

    fn caller(&self, account_id: &str, user: &str) -> Arc<Caller> {
        let (akid, _) = self
            .iam
            .create_access_key(&account(account_id), user)
            .unwrap();
        self.iam.resolve(&akid).unwrap().caller.clone()
    }
}

fn ctx(caller: &Arc<Caller>, time: Timestamp) -> RequestContext {
    RequestContext {
        request_id: "req".into(),
        caller: caller.clone(),
        region: Region::parse("us-east-1").unwrap(),
        source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        user_agent: "test".into(),
        time,
        via_service: None,
    }
}

fn params(action: &str, pairs: &[(&str, &str)]) -> QueryParams {
    let mut all = vec![("Action", action)];
    all.extend_from_slice(pairs);
    QueryParams::from_pairs(&all)
}

fn iam_call(
    iam: &Iam,
    caller: &Arc<Caller>,
    action: &str,
    pairs: &[(&str, &str)],
) -> Result<String, IamError> {
    let mut audit = AuditDetails::default();
    iam.invoke_iam(
        &ctx(caller, iam.now()),
        action,
        &params(action, pairs),
        &mut audit,
    )
}

fn sts_call(
    iam: &Iam,
    caller: &Arc<Caller>,
    action: &str,
    pairs: &[(&str, &str)],
) -> Result<String, IamError> {
    let mut audit = AuditDetails::default();
    iam.invoke_sts(
        &ctx(caller, iam.now()),
        action,
        &params(action, pairs),
        &mut audit,
    )
}

/// The text of the first `<name>` element.
fn element<'a>(xml: &'a str, name: &str) -> &'a str {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open).map(|i| i + open.len()).unwrap_or(0);
    let end = xml[start..]
        .find(&close)
        .map(|i| i + start)
        .unwrap_or(start);
    &xml[start..end]
}

const ALLOW_ENCRYPT: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}"#;

fn trust_for(principal: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{principal}"}},"Action":"sts:AssumeRole"}}]}}"#
    )
}

#[test]
fn users_and_keys_resolve_to_callers() {
    let store = Arc::new(Store::in_memory().unwrap());
    let root = Arc::new(RootKey::from_secret(&SecretBytes::zeroed(32)).unwrap());
    let iam = Iam::open(store, root, Arc::new(SystemClock)).unwrap();
    let account = account(A);
    iam.ensure_account(&account).unwrap();
    iam.ensure_user(&account, "alice", &[ADMINISTRATOR_ACCESS.to_owned()])
        .unwrap();
    let (akid, secret) = iam.create_access_key(&account, "alice").unwrap();
    let credential = iam.resolve(&akid).unwrap();
    assert_eq!(credential.secret, secret);
    assert_eq!(
        credential.caller.principal.arn,
        "arn:aws:iam::111122223333:user/alice"
    );
    assert_eq!(iam.identity_policies(&credential.caller.principal).len(), 1);
    assert!(iam.resolve("AKIANOTAKEY").is_none());
    assert_eq!(iam.access_keys_of(&account, "alice"), vec![akid]);
    let account_ref = |id: &str| PrincipalRef::Account {
        account: id.to_owned(),
    };
    let user = |arn: &str| PrincipalRef::User {
        arn: arn.to_owned(),
    };
    assert!(iam.knows(&account_ref(A)));
    assert!(!iam.knows(&account_ref("999999999999")));
    assert!(iam.knows(&user("arn:aws:iam::111122223333:user/alice")));
    assert!(!iam.knows(&user("arn:aws:iam::111122223333:user/bob")));
}

#[test]
fn refuses_bad_names_and_unknown_policies() {
    let f = Fixture::new();
    assert!(f.iam.ensure_user(&account(A), "bad name", &[]).is_err());
    assert!(
        f.iam
            .ensure_user(&account(A), "x", &["arn:aws:iam::aws:policy/Nope".into()])
            .is_err()
    );
    assert!(
        f.iam
            .ensure_user(&account("999999999999"), "x", &[])
            .is_err()
    );
}

#[test]
fn declared_policies_leave_api_attachments_alone() {
    let f = Fixture::new();
    let admin = f.caller(A, "admin");
    let created = iam_call(
        &f.iam,
        &admin,
        "CreatePolicy",
        &[("PolicyName", "Enc"), ("PolicyDocument", ALLOW_ENCRYPT)],
    )
    .unwrap();
    let arn = element(&created, "Arn").to_owned();
    iam_call(
        &f.iam,
        &admin,
        "AttachUserPolicy",
        &[("UserName", "nobody"), ("PolicyArn", &arn)],
    )
    .unwrap();
    // The configuration is applied again (a restart): unchanged declarations change nothing.
    f.iam.ensure_user(&account(A), "nobody", &[]).unwrap();
    let iam = f.reopen();
    iam.ensure_user(&account(A), "nobody", &[]).unwrap();
    let nobody = iam.snapshot().user(A, "nobody").unwrap().clone();
    assert_eq!(nobody.attached_policies, vec![arn.clone()]);
    // A newly declared policy is attached; one no longer declared is detached.
    iam.ensure_user(&account(A), "nobody", &[READ_ONLY_ACCESS.to_owned()])
        .unwrap();
    iam.ensure_user(&account(A), "nobody", &[]).unwrap();
    let nobody = iam.snapshot().user(A, "nobody").unwrap().clone();
    assert_eq!(nobody.attached_policies, vec![arn]);
}

#[test]
fn user_lifecycle_and_conflicts() {
    let f = Fixture::new();
    let admin = f.caller(A, "admin");
    let xml = iam_call(
        &f.iam,
        &admin,
        "CreateUser",
        &[
            ("UserName", "alice"),
            ("Path", "/team/"),
            ("Tags.member.1.Key", "k"),
            ("Tags.member.1.Value", "v"),
        ],
    )
    .unwrap();
    assert_eq!(
        element(&xml, "Arn"),
        "arn:aws:iam::111122223333:user/team/alice"
    );
    assert!(element(&xml, "UserId").starts_with("AIDA"));
    let duplicate = iam_call(&f.iam, &admin, "CreateUser", &[("UserName", "ALICE")]);
    assert!(matches!(duplicate, Err(IamError::EntityAlreadyExists(_))));
    let got = iam_call(&f.iam, &admin, "GetUser", &[("UserName", "Alice")]).unwrap();
    assert!(got.contains("<Key>k</Key>"));
    let missing = iam_call(&f.iam, &admin, "GetUser", &[("UserName", "zed")]);
    assert!(
        matches!(missing, Err(IamError::NoSuchEntity(m)) if m == "The user with name zed cannot be found.")
    );
    let me = iam_call(&f.iam, &admin, "GetUser", &[]).unwrap();
    assert_eq!(element(&me, "UserName"), "admin");

    let key = iam_call(&f.iam, &admin, "CreateAccessKey", &[("UserName", "alice")]).unwrap();
    let key_id = element(&key, "AccessKeyId").to_owned();
    assert_eq!(element(&key, "SecretAccessKey").len(), 40);
    assert!(f.iam.resolve(&key_id).is_some());
    iam_call(
        &f.iam,
        &admin,
        "PutUserPolicy",
        &[
            ("UserName", "alice"),
            ("PolicyName", "inline"),
            ("PolicyDocument", ALLOW_ENCRYPT),
        ],
    )
    .unwrap();
    iam_call(
        &f.iam,
        &admin,
        "AttachUserPolicy",
        &[("UserName", "alice"), ("PolicyArn", READ_ONLY_ACCESS)],
    )
    .unwrap();

    let conflict =
        |expected: &str| match iam_call(&f.iam, &admin, "DeleteUser", &[("UserName", "alice")]) {
            Err(IamError::DeleteConflict(message)) => assert_eq!(message, expected),
            other => panic!("expected DeleteConflict, got {other:?}"),
        };
    conflict("Cannot delete entity, must delete access keys first.");
    iam_call(
        &f.iam,
        &admin,
        "UpdateAccessKey",
        &[
            ("UserName", "alice"),
            ("AccessKeyId", &key_id),
            ("Status", "Inactive"),
        ],
    )
    .unwrap();
    assert!(f.iam.resolve(&key_id).is_none());
    iam_call(
        &f.iam,
        &admin,
        "UpdateAccessKey",
        &[
            ("UserName", "alice"),
            ("AccessKeyId", &key_id),
            ("Status", "Active"),
        ],
    )
    .unwrap();
    assert!(f.iam.resolve(&key_id).is_some());
    iam_call(
        &f.iam,
        &admin,
        "DeleteAccessKey",
        &[("UserName", "alice"), ("AccessKeyId", &key_id)],
    )
    .unwrap();
    assert!(f.iam.resolve(&key_id).is_none());
    conflict("Cannot delete entity, must delete policies first.");
    iam_call(
        &f.iam,
        &admin,
        "DeleteUserPolicy",
        &[("UserName", "alice"), ("PolicyName", "inline")],
    )
    .unwrap();
    conflict("Cannot delete entity, must detach all policies first.");
    iam_call(
        &f.iam,
        &admin,
        "DetachUserPolicy",
        &[("UserName", "alice"), ("PolicyArn", READ_ONLY_ACCESS)],
    )
    .unwrap();
    iam_call(&f.iam, &admin, "DeleteUser", &[("UserName", "alice")]).unwrap();
    assert!(f.iam.snapshot().user(A, "alice").is_none());
}

#[test]
fn access_key_quota_and_ownership() {
    let f = Fixture::new();
    let admin = f.caller(A, "admin");
    iam_call(&f.iam, &admin, "CreateAccessKey", &[("UserName", "nobody")]).unwrap();
    let second = iam_call(&f.iam, &admin, "CreateAccessKey", &[("UserName", "nobody")]).unwrap();
    let third = iam_call(&f.iam, &admin, "CreateAccessKey", &[("UserName", "nobody")]);
    assert!(
        matches!(third, Err(IamError::LimitExceeded(m)) if m == "Cannot exceed quota for AccessKeysPerUser: 2")
    );
    // A key of another user is not found under this one.
    let other = iam_call(
        &f.iam,
        &admin,
        "DeleteAccessKey",
        &[
            ("UserName", "admin"),
            ("AccessKeyId", element(&second, "AccessKeyId")),
        ],
    );
    assert!(matches!(other, Err(IamError::NoSuchEntity(_))));
}

#[test]
fn listing_pages_with_markers() {
    let f = Fixture::new();
    let admin = f.caller(A, "admin");
    for i in 0..5 {
        iam_call(
            &f.iam,
            &admin,
            "CreateUser",
            &[("UserName", &format!("u{i}"))],
        )
        .unwrap();
    }
    let mut names = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut pairs = vec![("MaxItems", "3")];
        if let Some(m) = &marker {
            pairs.push(("Marker", m));
        }
        let xml = iam_call(&f.iam, &admin, "ListUsers", &pairs).unwrap();
        names.extend(
            xml.split("<UserName>")
                .skip(1)
                .map(|s| s.split('<').next().unwrap_or_default().to_owned()),
        );
        if element(&xml, "IsTruncated") == "true" {
            marker = Some(element(&xml, "Marker").to_owned());
        } else {
            break;
        }
    }
    assert_eq!(names, ["admin", "nobody", "u0", "u1", "u2", "u3", "u4"]);
    // Account B does not see account A's users.
    let admin_b = f.caller(B, "admin");
    let xml = iam_call(&f.iam, &admin_b, "ListUsers", &[]).unwrap();
    assert_eq!(xml.matches("<member>").count(), 1);
    let bad = iam_call(&f.iam, &admin, "ListUsers", &[("MaxItems", "0")]);
    assert!(matches!(bad, Err(IamError::Validation(_))));
}

#[test]
fn iam_calls_need_identity_permission() {
    let f = Fixture::new();
    let nobody = f.caller(A, "nobody");
    let denied = iam_call(&f.iam, &nobody, "CreateUser", &[("UserName", "x")]);
    match denied {
        Err(IamError::AccessDenied(message)) => assert_eq!(
            message,
            "User: arn:aws:iam::111122223333:user/nobody is not authorized to perform: iam:CreateUser on resource: arn:aws:iam::111122223333:user/x because no identity-based policy allows the iam:CreateUser action"
        ),
        other => panic!("expected AccessDenied, got {other:?}"),
    }
    // An explicit deny beats AdministratorAccess.
    let admin = f.caller(A, "admin");
    iam_call(&f.iam, &admin, "PutUserPolicy", &[
        ("UserName", "admin"),
        ("PolicyName", "no-users"),
        (
            "PolicyDocument",
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"iam:CreateUser","Resource":"*"}}"#,
        ),
    ])
    .unwrap();
    let denied = iam_call(&f.iam, &admin, "CreateUser", &[("UserName", "x")]);
    assert!(
        matches!(denied, Err(IamError::AccessDenied(m)) if m.ends_with("with an explicit deny in an identity-based policy"))
    );
    // Policy variables: a user may manage only its own keys.
    iam_call(&f.iam, &admin, "PutUserPolicy", &[
        ("UserName", "nobody"),
        ("PolicyName", "own-keys"),
        (
            "PolicyDocument",
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"iam:*AccessKey*","Resource":"arn:aws:iam::*:user/${aws:username}"}}"#,
        ),
    ])
    .unwrap();
    assert!(iam_call(&f.iam, &nobody, "ListAccessKeys", &[]).is_ok());
    assert!(iam_call(&f.iam, &nobody, "ListAccessKeys", &[("UserName", "admin")]).is_err());
    // Invalid documents are refused with the parser's message.
    let malformed = iam_call(
        &f.iam,
        &admin,
        "PutUserPolicy",
        &[
            ("UserName", "nobody"),
            ("PolicyName", "bad"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*"}}"#,
            ),
        ],
    );
    assert!(
        matches!(malformed, Err(IamError::MalformedPolicyDocument(m)) if m.contains("Missing required field Resource"))
    );
}

#[test]
fn managed_policies_change_what_a_user_may_do() {
    let f = Fixture::new();
    let admin = f.caller(A, "admin");
    let nobody = f.caller(A, "nobody");
    assert!(f.iam.identity_policies(&nobody.principal).is_empty());
    let created = iam_call(
        &f.iam,
        &admin,
        "CreatePolicy",
        &[
            ("PolicyName", "Enc"),
            ("Path", "/app/"),
            ("PolicyDocument", ALLOW_ENCRYPT),
        ],
    )
    .unwrap();
    let arn = element(&created, "Arn").to_owned();
    assert_eq!(arn, "arn:aws:iam::111122223333:policy/app/Enc");
    assert!(element(&created, "PolicyId").starts_with("ANPA"));
    let duplicate = iam_call(
        &f.iam,
        &admin,
        "CreatePolicy",
        &[("PolicyName", "enc"), ("PolicyDocument", ALLOW_ENCRYPT)],
    );
    assert!(matches!(duplicate, Err(IamError::EntityAlreadyExists(_))));
    iam_call(
        &f.iam,
        &admin,
        "AttachUserPolicy",
        &[("UserName", "nobody"), ("PolicyArn", &arn)],
    )
    .unwrap();
    assert_eq!(f.iam.identity_policies(&nobody.principal).len(), 1);
    let got = iam_call(&f.iam, &admin, "GetPolicy", &[("PolicyArn", &arn)]).unwrap();
    assert_eq!(element(&got, "AttachmentCount"), "1");
    let version = iam_call(
        &f.iam,
        &admin,
        "GetPolicyVersion",
        &[("PolicyArn", &arn), ("VersionId", "v1")],
    )
    .unwrap();
    assert!(element(&version, "Document").starts_with("%7B%22Version%22"));
    let conflict = iam_call(&f.iam, &admin, "DeletePolicy", &[("PolicyArn", &arn)]);
    assert!(matches!(conflict, Err(IamError::DeleteConflict(_))));
    let listed = iam_call(&f.iam, &admin, "ListPolicies", &[("Scope", "Local")]).unwrap();
    assert_eq!(listed.matches("<member>").count(), 1);
    let listed = iam_call(&f.iam, &admin, "ListPolicies", &[("Scope", "AWS")]).unwrap();
    assert!(listed.contains("AdministratorAccess") && listed.contains("ReadOnlyAccess"));
    let attached = iam_call(&f.iam, &admin, "ListPolicies", &[("OnlyAttached", "true")]).unwrap();
    assert_eq!(attached.matches("<member>").count(), 2, "{attached}");
    iam_call(
        &f.iam,
        &admin,
        "DetachUserPolicy",
        &[("UserName", "nobody"), ("PolicyArn", &arn)],
    )
    .unwrap();
    assert!(f.iam.identity_policies(&nobody.principal).is_empty());
    let again = iam_call(
        &f.iam,
        &admin,
        "DetachUserPolicy",
        &[("UserName", "nobody"), ("PolicyArn", &arn)],
    );
    assert!(matches!(again, Err(IamError::NoSuchEntity(_))));
    iam_call(&f.iam, &admin, "DeletePolicy", &[("PolicyArn", &arn)]).unwrap();
    let gone = iam_call(&f.iam, &admin, "GetPolicy", &[("PolicyArn", &arn)]);
    assert!(matches!(gone, Err(IamError::NoSuchEntity(_))));
    // Another account's policies are out of reach.
    let admin_b = f.caller(B, "admin");
    let foreign = iam_call(
        &f.iam,
        &admin_b,
        "AttachUserPolicy",
        &[
            ("UserName", "admin"),
            ("PolicyArn", "arn:aws:iam::111122223333:policy/Whatever"),
        ],
    );
    assert!(matches!(foreign, Err(IamError::NoSuchEntity(_))));
}

#[test]
fn roles_trust_policies_and_inline_policies() {
    let f = Fixture::new();
    let admin = f.caller(A, "admin");
    let nobody_arn = "arn:aws:iam::111122223333:user/nobody";
    let bad_principal = iam_call(
        &f.iam,
        &admin,
        "CreateRole",
        &[
            ("RoleName", "Admin"),
            (
                "AssumeRolePolicyDocument",
                &trust_for("arn:aws:iam::111122223333:user/ghost"),
            ),
        ],
    );
    assert!(
        matches!(bad_principal, Err(IamError::MalformedPolicyDocument(m)) if m.contains("Invalid principal"))
    );
    let with_resource = iam_call(
        &f.iam,
        &admin,
        "CreateRole",
        &[
            ("RoleName", "Admin"),
            (
                "AssumeRolePolicyDocument",
                r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"sts:AssumeRole","Resource":"*"}}"#,
            ),
        ],
    );
    assert!(matches!(
        with_resource,
        Err(IamError::MalformedPolicyDocument(_))
    ));
    let xml = iam_call(
        &f.iam,
        &admin,
        "CreateRole",
        &[
            ("RoleName", "Admin"),
            ("AssumeRolePolicyDocument", &trust_for(nobody_arn)),
            ("MaxSessionDuration", "7200"),
        ],
    )
    .unwrap();
    let role_arn = element(&xml, "Arn").to_owned();
    assert_eq!(role_arn, "arn:aws:iam::111122223333:role/Admin");
    assert!(element(&xml, "RoleId").starts_with("AROA"));
    assert!(f.iam.knows(&PrincipalRef::Role {
        arn: role_arn.clone()
    }));
    let too_long = iam_call(
        &f.iam,
        &admin,
        "CreateRole",
        &[
            ("RoleName", "Other"),
            ("AssumeRolePolicyDocument", &trust_for(nobody_arn)),
            ("MaxSessionDuration", "100"),
        ],
    );
    assert!(matches!(too_long, Err(IamError::Validation(_))));
    iam_call(
        &f.iam,
        &admin,
        "PutRolePolicy",
        &[
            ("RoleName", "Admin"),
            ("PolicyName", "enc"),
            ("PolicyDocument", ALLOW_ENCRYPT),
        ],
    )
    .unwrap();
    let listed = iam_call(&f.iam, &admin, "ListRolePolicies", &[("RoleName", "Admin")]).unwrap();
    assert_eq!(element(&listed, "PolicyNames"), "<member>enc</member>");
    let got = iam_call(
        &f.iam,
        &admin,
        "GetRolePolicy",
        &[("RoleName", "Admin"), ("PolicyName", "enc")],
    )
    .unwrap();
    assert_eq!(element(&got, "RoleName"), "Admin");
    let conflict = iam_call(&f.iam, &admin, "DeleteRole", &[("RoleName", "Admin")]);
    assert!(matches!(conflict, Err(IamError::DeleteConflict(_))));
    iam_call(
        &f.iam,
        &admin,
        "UpdateAssumeRolePolicy",
        &[("RoleName", "Admin"), ("PolicyDocument", &trust_for(A))],
    )
    .unwrap();
    let role = iam_call(&f.iam, &admin, "GetRole", &[("RoleName", "admin")]).unwrap();
    assert!(element(&role, "AssumeRolePolicyDocument").contains("111122223333"));
    iam_call(
        &f.iam,
        &admin,
        "DeleteRolePolicy",
        &[("RoleName", "Admin"), ("PolicyName", "enc")],
    )
    .unwrap();
    iam_call(&f.iam, &admin, "DeleteRole", &[("RoleName", "Admin")]).unwrap();
    assert!(!f.iam.knows(&PrincipalRef::Role { arn: role_arn }));
}

/// Creates role `Admin` in account A trusting `principal`, with inline `kms:Encrypt`.
fn admin_role(f: &Fixture, admin: &Arc<Caller>, principal: &str) -> String {
    let xml = iam_call(
        &f.iam,
        admin,
        "CreateRole",
        &[
            ("RoleName", "Admin"),
            ("AssumeRolePolicyDocument", &trust_for(principal)),
        ],
    )
    .unwrap();
    iam_call(
        &f.iam,
        admin,
        "PutRolePolicy",
        &[
            ("RoleName", "Admin"),
            ("PolicyName", "enc"),
            ("PolicyDocument", ALLOW_ENCRYPT),
        ],
    )
    .unwrap();
    element(&xml, "Arn").to_owned()
}

#[test]
fn assume_role_issues_session_credentials() {
    let f = Fixture::new();
    let admin = f.caller(A, "admin");
    let nobody = f.caller(A, "nobody");
    let role_arn = admin_role(&f, &admin, "arn:aws:iam::111122223333:user/nobody");
    let xml = sts_call(
        &f.iam,
        &nobody,
        "AssumeRole",
        &[
            ("RoleArn", &role_arn),
            ("RoleSessionName", "s1"),
            ("DurationSeconds", "900"),
        ],
    )
    .unwrap();
    let key = element(&xml, "AccessKeyId");
    assert!(key.starts_with("ASIA"));
    assert_eq!(
        element(&xml, "Arn"),
        "arn:aws:sts::111122223333:assumed-role/Admin/s1"
    );
    let credential = f.iam.resolve(key).unwrap();
    assert_eq!(
        credential.session_token.as_deref(),
        Some(element(&xml, "SessionToken"))
    );
    assert_eq!(credential.expires, Some(f.iam.now().plus_millis(900_000)));
    let session = credential.caller.clone();
    assert!(session.principal.user_id.starts_with("AROA"));
    assert!(session.principal.user_id.ends_with(":s1"));
    assert_eq!(
        session.session.as_ref().map(|s| s.role_name.as_str()),
        Some("Admin")
    );
    assert_eq!(f.iam.identity_policies(&session.principal).len(), 1);
    let identity = sts_call(&f.iam, &session, "GetCallerIdentity", &[]).unwrap();
    assert_eq!(
        element(&identity, "Arn"),
        "arn:aws:sts::111122223333:assumed-role/Admin/s1"
    );
    // Sessions survive a restart, and are dropped long after they expire.
    let reopened = f.reopen();
    assert!(reopened.resolve(key).is_some());
    f.clock
        .advance_millis(SESSION_RETENTION_MILLIS + 900_000 + 1);
    let reopened = f.reopen();
    assert!(reopened.resolve(key).is_none());
}

#[test]
fn assume_role_decisions() {
    let f = Fixture::new();
    let admin = f.caller(A, "admin");
    let nobody = f.caller(A, "nobody");
    let admin_b = f.caller(B, "admin");
    // Trusting the account: the caller needs its own permission.
    let role_arn = admin_role(&f, &admin, "arn:aws:iam::111122223333:root");
    let assume = |caller: &Arc<Caller>| {
        sts_call(
            &f.iam,
            caller,
            "AssumeRole",
            &[("RoleArn", &role_arn), ("RoleSessionName", "sess")],
        )
    };
    assert!(
        matches!(assume(&nobody), Err(IamError::AccessDenied(m)) if m.ends_with("because no identity-based policy allows the sts:AssumeRole action"))
    );
    assert!(assume(&admin).is_ok());
    // Another account, not trusted.
    assert!(matches!(assume(&admin_b), Err(IamError::AccessDenied(_))));
    // Trust account B: B's administrator (whose policy allows everything) may assume it.
    iam_call(
        &f.iam,
        &admin,
        "UpdateAssumeRolePolicy",
        &[
            ("RoleName", "Admin"),
            (
                "PolicyDocument",
                &trust_for("arn:aws:iam::444455556666:root"),
            ),
        ],
    )
    .unwrap();
    let xml = assume(&admin_b).unwrap();
    assert_eq!(
        element(&xml, "Arn"),
        "arn:aws:sts::111122223333:assumed-role/Admin/sess"
    );
    // A role that does not exist is an AccessDenied too.
    let missing = sts_call(
        &f.iam,
        &admin,
        "AssumeRole",
        &[
            ("RoleArn", "arn:aws:iam::111122223333:role/Nope"),
            ("RoleSessionName", "sess"),
        ],
    );
    assert!(matches!(missing, Err(IamError::AccessDenied(_))));
    // Validation: session names and durations.
    let short = sts_call(
        &f.iam,
        &admin_b,
        "AssumeRole",
        &[("RoleArn", &role_arn), ("RoleSessionName", "sess")],
    );
    assert!(short.is_ok());
    for (name, duration) in [("x", "900"), ("ok-name", "899"), ("ok-name", "7200")] {
        let result = sts_call(
            &f.iam,
            &admin_b,
            "AssumeRole",
            &[
                ("RoleArn", &role_arn),
                ("RoleSessionName", name),
                ("DurationSeconds", duration),
            ],
        );
        assert!(
            matches!(result, Err(IamError::Validation(_))),
            "{name} {duration}"
        );
    }
    let unsupported = sts_call(
        &f.iam,
        &admin_b,
        "AssumeRole",
        &[
            ("RoleArn", &role_arn),
            ("RoleSessionName", "sess"),
            ("Policy", "{}"),
        ],
    );
    assert!(matches!(unsupported, Err(IamError::Validation(_))));
}

#[test]
fn sessions_of_a_deleted_role_lose_its_policies() {
    let f = Fixture::new();
    let admin = f.caller(A, "admin");
    let role_arn = admin_role(&f, &admin, "arn:aws:iam::111122223333:user/admin");
    let xml = sts_call(
        &f.iam,
        &admin,
        "AssumeRole",
        &[("RoleArn", &role_arn), ("RoleSessionName", "sess")],
    )
    .unwrap();
    let session = f
        .iam
        .resolve(element(&xml, "AccessKeyId"))
        .unwrap()
        .caller
        .clone();
    assert_eq!(f.iam.identity_policies(&session.principal).len(), 1);
    iam_call(
        &f.iam,
        &admin,
        "DeleteRolePolicy",
        &[("RoleName", "Admin"), ("PolicyName", "enc")],
    )
    .unwrap();
    iam_call(&f.iam, &admin, "DeleteRole", &[("RoleName", "Admin")]).unwrap();
    admin_role(&f, &admin, "arn:aws:iam::111122223333:user/admin");
    // The new role of the same name has a new id; the old session does not carry it.
    assert!(f.iam.identity_policies(&session.principal).is_empty());
}

#[test]
fn everything_survives_reload() {
    let f = Fixture::new();
    let admin = f.caller(A, "admin");
    iam_call(
        &f.iam,
        &admin,
        "CreateUser",
        &[("UserName", "alice"), ("Path", "/p/")],
    )
    .unwrap();
    let key = iam_call(&f.iam, &admin, "CreateAccessKey", &[("UserName", "alice")]).unwrap();
    let created = iam_call(
        &f.iam,
        &admin,
        "CreatePolicy",
        &[("PolicyName", "Enc"), ("PolicyDocument", ALLOW_ENCRYPT)],
    )
    .unwrap();
    iam_call(
        &f.iam,
        &admin,
        "AttachUserPolicy",
        &[
            ("UserName", "alice"),
            ("PolicyArn", element(&created, "Arn")),
        ],
    )
    .unwrap();
    admin_role(&f, &admin, "arn:aws:iam::111122223333:user/p/alice");
    let iam = f.reopen();
    let alice = iam
        .resolve(element(&key, "AccessKeyId"))
        .unwrap()
        .caller
        .clone();
    assert_eq!(
        alice.principal.arn,
        "arn:aws:iam::111122223333:user/p/alice"
    );
    assert_eq!(iam.identity_policies(&alice.principal).len(), 1);
    let role = iam
        .snapshot()
        .role(A, "Admin")
        .map(|r| r.record.inline_policies.len());
    assert_eq!(role, Some(1));
    assert!(
        sts_call(
            &iam,
            &alice,
            "AssumeRole",
            &[
                ("RoleArn", "arn:aws:iam::111122223333:role/Admin"),
                ("RoleSessionName", "sess"),
            ]
        )
        .is_ok()
    );
}

#[test]
fn audit_details_are_filled_without_secrets() {
    let f = Fixture::new();
    let admin = f.caller(A, "admin");
    let mut audit = AuditDetails::default();
    let xml = f
        .iam
        .invoke_iam(
            &ctx(&admin, f.iam.now()),
            "CreateAccessKey",
            &params("CreateAccessKey", &[("UserName", "nobody")]),
            &mut audit,
        )
        .unwrap();
    let secret = element(&xml, "SecretAccessKey");
    assert_eq!(audit.read_only, Some(false));
    assert_eq!(
        audit.request_parameters,
        Some(serde_json::json!({"userName": "nobody"}))
    );
    let recorded = format!("{:?}", audit);
    assert!(!recorded.contains(secret));
    assert_eq!(audit.resources.len(), 1);
    let mut audit = AuditDetails::default();
    let unknown = f.iam.invoke_iam(
        &ctx(&admin, f.iam.now()),
        "CreateGroup",
        &params("CreateGroup", &[]),
        &mut audit,
    );
    assert!(matches!(unknown, Err(IamError::InvalidAction(_))));
}
