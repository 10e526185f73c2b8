//! Cases taken from AWS's documented policy examples (IAM user guide, KMS developer guide)
//! and from the seed reports, run as one table each for evaluation and for validation.

use kura_policy::{
    AuthzRequest, ContextKeys, Evaluation, PolicyDocument, PolicyError, PolicyKind, Principal,
    PrincipalKind, PrincipalMatch, evaluate_all,
};

const ACCOUNT: &str = "111122223333";
const OTHER_ACCOUNT: &str = "444455556666";
const KEY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn user_in(account: &str, name: &str) -> Principal {
    Principal {
        arn: format!("arn:aws:iam::{account}:user/{name}"),
        account: account.into(),
        kind: PrincipalKind::User,
        user_id: format!("AIDA{}", name.to_uppercase()),
        username: Some(name.into()),
    }
}

fn user(name: &str) -> Principal {
    user_in(ACCOUNT, name)
}

fn root(account: &str) -> Principal {
    Principal {
        arn: format!("arn:aws:iam::{account}:root"),
        account: account.into(),
        kind: PrincipalKind::Root,
        user_id: account.into(),
        username: None,
    }
}

fn session(account: &str, role: &str, session_name: &str) -> Principal {
    Principal {
        arn: format!("arn:aws:sts::{account}:assumed-role/{role}/{session_name}"),
        account: account.into(),
        kind: PrincipalKind::AssumedRole {
            role_arn: format!("arn:aws:iam::{account}:role/{role}"),
            session_name: session_name.into(),
        },
        user_id: format!("AROAEXAMPLE:{session_name}"),
        username: None,
    }
}

fn service(name: &str) -> Principal {
    Principal {
        arn: name.into(),
        account: String::new(),
        kind: PrincipalKind::Service { name: name.into() },
        user_id: String::new(),
        username: None,
    }
}

/// A context value in a case table.
enum Ctx {
    One(&'static str),
    Many(&'static [&'static str]),
}

fn context(pairs: &[(&str, Ctx)]) -> ContextKeys {
    let mut keys = ContextKeys::new();
    for (name, value) in pairs {
        match value {
            Ctx::One(v) => keys.set(name, *v),
            Ctx::Many(vs) => keys.set_multi(name, vs.iter().map(|s| s.to_string()).collect()),
        }
    }
    keys
}

/// What a case expects, written compactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Deny(Option<&'static str>),
    Allow(Option<&'static str>, PrincipalMatch),
    Nothing,
}

fn outcome(evaluation: &Evaluation) -> (char, Option<String>, Option<PrincipalMatch>) {
    match evaluation {
        Evaluation::ExplicitDeny { sid } => ('D', sid.clone(), None),
        Evaluation::Allow {
            sid,
            principal_match,
        } => ('A', sid.clone(), Some(*principal_match)),
        Evaluation::NotApplicable => ('N', None, None),
    }
}

fn expected(expect: Expect) -> (char, Option<String>, Option<PrincipalMatch>) {
    match expect {
        Expect::Deny(sid) => ('D', sid.map(String::from), None),
        Expect::Allow(sid, m) => ('A', sid.map(String::from), Some(m)),
        Expect::Nothing => ('N', None, None),
    }
}

struct Case {
    name: &'static str,
    kind: PolicyKind,
    policy: &'static str,
    caller: Principal,
    action: &'static str,
    resource: &'static str,
    context: Vec<(&'static str, Ctx)>,
    expect: Expect,
}

/// `policy` is `(kind, text)`.
fn case(
    name: &'static str,
    (kind, policy): (PolicyKind, &'static str),
    caller: Principal,
    action: &'static str,
    resource: &'static str,
    context: Vec<(&'static str, Ctx)>,
    expect: Expect,
) -> Case {
    Case {
        name,
        kind,
        policy,
        caller,
        action,
        resource,
        context,
        expect,
    }
}

use Ctx::{Many, One};
use Expect::{Allow, Deny, Nothing};
use PolicyKind::{Identity, Resource, Trust};
use PrincipalMatch::{Account, Direct, NotApplicable as Implied};

const DENY_BEATS_ALLOW: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"AllowAll","Effect":"Allow","Action":"kms:*","Resource":"*"},
  {"Sid":"DenyDecrypt","Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}"#;

// IAM user guide, NotAction: "allows access to all services except IAM".
const NOT_ACTION: &str = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow",
  "NotAction":"iam:*","Resource":"*"}}"#;

// IAM user guide, NotResource: deny everything outside one bucket.
const NOT_RESOURCE: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":"s3:*","Resource":"*"},
  {"Sid":"OnlyThisBucket","Effect":"Deny","Action":"s3:*",
   "NotResource":["arn:aws:s3:::amzn-s3-demo-bucket","arn:aws:s3:::amzn-s3-demo-bucket/*"]}]}"#;

// IAM user guide, NotPrincipal with Deny: everyone except the named role (and its account).
const NOT_PRINCIPAL: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"AllowAccount","Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"},
  {"Sid":"DenyAllButAdmin","Effect":"Deny","NotPrincipal":{"AWS":[
     "arn:aws:iam::111122223333:role/Admin"]},"Action":"kms:ScheduleKeyDeletion","Resource":"*"}]}"#;

// IAM user guide, policy variables: each user gets a home prefix.
const HOME_PREFIX: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"ListOwnHome","Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::amzn-s3-demo-bucket",
   "Condition":{"StringLike":{"s3:prefix":["home/${aws:username}/*"]}}},
  {"Sid":"UseOwnHome","Effect":"Allow","Action":["s3:GetObject","s3:PutObject"],
   "Resource":"arn:aws:s3:::amzn-s3-demo-bucket/home/${aws:username}/*"}]}"#;

// Same policy without a Version: 2008-10-17 semantics, `${…}` is literal.
const HOME_PREFIX_2008: &str = r#"{"Statement":{"Effect":"Allow","Action":"s3:GetObject",
  "Resource":"arn:aws:s3:::amzn-s3-demo-bucket/home/${aws:username}/*"}}"#;

// IAM user guide, IfExists: instance types limited only when the key is present.
const IF_EXISTS: &str = r#"{"Version":"2012-10-17","Statement":{"Sid":"Types","Effect":"Allow",
  "Action":"ec2:RunInstances","Resource":"*",
  "Condition":{"StringLikeIfExists":{"ec2:InstanceType":["t1.*","t2.*","m3.*"]}}}}"#;

// IAM user guide, ForAllValues: only these tag keys may be used.
const FOR_ALL_VALUES: &str = r#"{"Version":"2012-10-17","Statement":{"Sid":"TagKeys","Effect":"Allow",
  "Action":"ec2:CreateTags","Resource":"*",
  "Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["environment","cost-center"]}}}}"#;

const FOR_ANY_VALUE: &str = r#"{"Version":"2012-10-17","Statement":{"Sid":"AnyTag","Effect":"Allow",
  "Action":"ec2:CreateTags","Resource":"*",
  "Condition":{"ForAnyValue:StringEquals":{"aws:TagKeys":["webserver"]}}}}"#;

// IAM user guide, multi-valued example: deny when any tag key lacks the key1 prefix.
const FOR_ALL_NOT_LIKE: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":"iam:*","Resource":"*"},
  {"Sid":"DenyRestrictedTags","Effect":"Deny","Action":["iam:Tag*","iam:UnTag*"],"Resource":["*"],
   "Condition":{"ForAllValues:StringNotLike":{"aws:TagKeys":"key1*"}}}]}"#;

// IAM user guide, Null: allow only with long-term credentials.
const NULL_CHECK: &str = r#"{"Version":"2012-10-17","Statement":{"Sid":"NoTempCreds","Effect":"Allow",
  "Action":"ec2:*","Resource":"*","Condition":{"Null":{"aws:TokenIssueTime":"true"}}}}"#;

const SECURE_TRANSPORT: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":"s3:*","Resource":"*"},
  {"Sid":"DenyInsecure","Effect":"Deny","Action":"s3:*","Resource":"*",
   "Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#;

// IAM user guide, "Denies access to AWS based on the source IP", plus an IPv6 range.
const SOURCE_IP: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":"*","Resource":"*"},
  {"Sid":"DenyOutside","Effect":"Deny","Action":"*","Resource":"*",
   "Condition":{"NotIpAddress":{"aws:SourceIp":["192.0.2.0/24","203.0.113.0/24","2001:DB8:1234:5678::/64"]}}}]}"#;

// IAM user guide, "Allows access based on date and time".
const DATE_RANGE: &str = r#"{"Version":"2012-10-17","Statement":{"Sid":"Q2","Effect":"Allow",
  "Action":"service-prefix:action-name","Resource":"*",
  "Condition":{"DateGreaterThan":{"aws:CurrentTime":"2020-04-01T00:00:00Z"},
               "DateLessThan":{"aws:CurrentTime":"2020-06-30T23:59:59Z"}}}}"#;

// IAM user guide, numeric condition: at most 10 keys per ListBucket.
const NUMERIC: &str = r#"{"Version":"2012-10-17","Statement":{"Sid":"MaxKeys","Effect":"Allow",
  "Action":"s3:ListBucket","Resource":"arn:aws:s3:::amzn-s3-demo-bucket",
  "Condition":{"NumericLessThanEquals":{"s3:max-keys":"10"}}}}"#;

const ARN_LIKE: &str = r#"{"Version":"2012-10-17","Statement":{"Sid":"AdminRoles","Effect":"Allow",
  "Principal":{"AWS":"*"},"Action":"kms:Decrypt","Resource":"*",
  "Condition":{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/Admin*"}}}}"#;

const CASE_INSENSITIVE_ACTION: &str = r#"{"Version":"2012-10-17","Statement":{"Sid":"Mixed","Effect":"Allow",
  "Action":"KMS:encrypt","Resource":"*"}}"#;

// KMS developer guide, default key policy.
const DEFAULT_KEY_POLICY: &str = r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[
  {"Sid":"Enable IAM User Permissions","Effect":"Allow",
   "Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;

const ROLE_KEY_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"KeyUsers","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/Admin"},
   "Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"},
  {"Sid":"OneSession","Effect":"Allow",
   "Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/Ops/night-shift"},
   "Action":"kms:DescribeKey","Resource":"*"}]}"#;

// aws-kms.md §1.8: the aws/rds managed key policy.
const AWS_RDS_KEY_POLICY: &str = r#"{"Version":"2012-10-17","Id":"auto-rds-2","Statement":[
  {"Sid":"Allow access through RDS for all principals in the account that are authorized to use RDS",
   "Effect":"Allow","Principal":{"AWS":"*"},
   "Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:CreateGrant","kms:ListGrants","kms:DescribeKey"],
   "Resource":"*",
   "Condition":{"StringEquals":{"kms:ViaService":"rds.us-east-1.amazonaws.com","kms:CallerAccount":"111122223333"}}},
  {"Sid":"Allow direct access to key metadata to the account","Effect":"Allow",
   "Principal":{"AWS":"arn:aws:iam::111122223333:root"},
   "Action":["kms:Describe*","kms:Get*","kms:List*","kms:RevokeGrant"],"Resource":"*"}]}"#;

// Seed 001 point 18: key policy in account B (444455556666) for account A's role Admin.
const SEED_001_KEY_POLICY: &str = r#"{"Version":"2012-10-17","Id":"key-consolepolicy-3","Statement":[
  {"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},
   "Action":"kms:*","Resource":"*"},
  {"Sid":"Allow use of the key","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/Admin"},
   "Action":["kms:CreateGrant","kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],
   "Resource":"*"},
  {"Sid":"Allow attachment of persistent resources","Effect":"Allow",
   "Principal":{"AWS":"arn:aws:iam::111122223333:role/Admin"},
   "Action":["kms:CreateGrant","kms:ListGrants","kms:RevokeGrant"],"Resource":"*",
   "Condition":{"Bool":{"kms:GrantIsForAWSResource":"true"}}}]}"#;

// Seed 001 point 19: the KMSCrossAccountAccess identity policy in account A.
const SEED_001_IAM_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"AllowUseOfTheKey","Effect":"Allow",
   "Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey","kms:CreateGrant","kms:RetireGrant"],
   "Resource":"arn:aws:kms:ap-northeast-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
  {"Sid":"AllowAttachmentOfPersistentResources","Effect":"Allow",
   "Action":["kms:CreateGrant","kms:ListGrants","kms:RevokeGrant"],
   "Resource":"arn:aws:kms:ap-northeast-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab",
   "Condition":{"Bool":{"kms:GrantIsForAWSResource":true}}}]}"#;

const SEED_001_KEY_B: &str =
    "arn:aws:kms:ap-northeast-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab";

// Seed 000 point 6: a Deny in a key policy that still lets the owning account through.
const DENY_EXCEPT_OWNER: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},
   "Action":"kms:*","Resource":"*"},
  {"Sid":"DenyOutsiders","Effect":"Deny","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*",
   "Condition":{"StringNotEquals":{"kms:CallerAccount":"111122223333"}}}]}"#;

// A resource-policy Deny that names the account covers every principal of that account.
const DENY_ACCOUNT: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"AllowAlice","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},
   "Action":"kms:*","Resource":"*"},
  {"Sid":"DenyAccount","Effect":"Deny","Principal":{"AWS":"111122223333"},"Action":"kms:ScheduleKeyDeletion","Resource":"*"}]}"#;

// IAM user guide, role trust policy for a service.
const EC2_TRUST: &str = r#"{"Version":"2012-10-17","Statement":{"Sid":"EC2","Effect":"Allow",
  "Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}}"#;

const CROSS_ACCOUNT_TRUST: &str = r#"{"Version":"2012-10-17","Statement":{"Sid":"TrustA","Effect":"Allow",
  "Principal":{"AWS":"111122223333"},"Action":"sts:AssumeRole",
  "Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"}}}}"#;

// KMS accepts statements without Resource or Action; they never apply.
const INERT_STATEMENTS: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"NoResource","Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*"},
  {"Sid":"NoAction","Effect":"Deny","Principal":{"AWS":"*"},"Resource":"*"}]}"#;

const ENCRYPTION_CONTEXT: &str = r#"{"Version":"2012-10-17","Statement":{"Sid":"AppOnly","Effect":"Allow",
  "Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:Decrypt","Resource":"*",
  "Condition":{"StringEquals":{"kms:EncryptionContext:AppName":"ExampleApp"},
               "ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["AppName"]}}}}"#;

/// One case per line: (name, (kind, policy), caller, action, resource, context, expected).
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        case("deny beats allow", (Identity, DENY_BEATS_ALLOW), user("alice"), "kms:Decrypt", KEY_ARN, vec![], Deny(Some("DenyDecrypt"))),
        case("allow when no deny applies", (Identity, DENY_BEATS_ALLOW), user("alice"), "kms:Encrypt", KEY_ARN, vec![], Allow(Some("AllowAll"), Implied)),
        case("NotAction allows other services", (Identity, NOT_ACTION), user("alice"), "s3:GetObject", "arn:aws:s3:::b/k", vec![], Allow(None, Implied)),
        case("NotAction excludes IAM", (Identity, NOT_ACTION), user("alice"), "iam:CreateUser", "arn:aws:iam::111122223333:user/bob", vec![], Nothing),
        case("NotResource denies other buckets", (Identity, NOT_RESOURCE), user("alice"), "s3:GetObject", "arn:aws:s3:::other-bucket/k", vec![], Deny(Some("OnlyThisBucket"))),
        case("NotResource spares the bucket", (Identity, NOT_RESOURCE), user("alice"), "s3:GetObject", "arn:aws:s3:::amzn-s3-demo-bucket/k", vec![], Allow(None, Implied)),
        case("NotPrincipal denies others", (Resource, NOT_PRINCIPAL), user("alice"), "kms:ScheduleKeyDeletion", KEY_ARN, vec![], Deny(Some("DenyAllButAdmin"))),
        case("NotPrincipal spares the role's session", (Resource, NOT_PRINCIPAL), session(ACCOUNT, "Admin", "s"), "kms:ScheduleKeyDeletion", KEY_ARN, vec![], Allow(Some("AllowAccount"), Account)),
        case("NotPrincipal only for its actions", (Resource, NOT_PRINCIPAL), user("alice"), "kms:Encrypt", KEY_ARN, vec![], Allow(Some("AllowAccount"), Account)),
        case("StringLike with username variable", (Identity, HOME_PREFIX), user("alice"), "s3:ListBucket", "arn:aws:s3:::amzn-s3-demo-bucket", vec![("s3:prefix", One("home/alice/photos"))], Allow(Some("ListOwnHome"), Implied)),
        case("StringLike other user's prefix", (Identity, HOME_PREFIX), user("alice"), "s3:ListBucket", "arn:aws:s3:::amzn-s3-demo-bucket", vec![("s3:prefix", One("home/bob/"))], Nothing),
        case("variable in Resource, own home", (Identity, HOME_PREFIX), user("alice"), "s3:GetObject", "arn:aws:s3:::amzn-s3-demo-bucket/home/alice/a.txt", vec![], Allow(Some("UseOwnHome"), Implied)),
        case("variable in Resource, other home", (Identity, HOME_PREFIX), user("alice"), "s3:GetObject", "arn:aws:s3:::amzn-s3-demo-bucket/home/bob/a.txt", vec![], Nothing),
        case("variable unresolvable for a role session", (Identity, HOME_PREFIX), session(ACCOUNT, "Admin", "s"), "s3:GetObject", "arn:aws:s3:::amzn-s3-demo-bucket/home/s/a.txt", vec![], Nothing),
        case("2008 version keeps ${} literal", (Identity, HOME_PREFIX_2008), user("alice"), "s3:GetObject", "arn:aws:s3:::amzn-s3-demo-bucket/home/alice/a.txt", vec![], Nothing),
        case("2008 version literal text matches itself", (Identity, HOME_PREFIX_2008), user("alice"), "s3:GetObject", "arn:aws:s3:::amzn-s3-demo-bucket/home/${aws:username}/a", vec![], Allow(None, Implied)),
        case("IfExists on a missing key", (Identity, IF_EXISTS), user("alice"), "ec2:RunInstances", "*", vec![], Allow(Some("Types"), Implied)),
        case("IfExists on a matching key", (Identity, IF_EXISTS), user("alice"), "ec2:RunInstances", "*", vec![("ec2:InstanceType", One("t2.micro"))], Allow(Some("Types"), Implied)),
        case("IfExists on another value", (Identity, IF_EXISTS), user("alice"), "ec2:RunInstances", "*", vec![("ec2:InstanceType", One("m5.large"))], Nothing),
        case("ForAllValues subset", (Identity, FOR_ALL_VALUES), user("alice"), "ec2:CreateTags", "*", vec![("aws:TagKeys", Many(&["environment"]))], Allow(Some("TagKeys"), Implied)),
        case("ForAllValues extra key", (Identity, FOR_ALL_VALUES), user("alice"), "ec2:CreateTags", "*", vec![("aws:TagKeys", Many(&["environment", "owner"]))], Nothing),
        case("ForAllValues pitfall: missing key is true", (Identity, FOR_ALL_VALUES), user("alice"), "ec2:CreateTags", "*", vec![], Allow(Some("TagKeys"), Implied)),
        case("ForAllValues pitfall: empty set is true", (Identity, FOR_ALL_VALUES), user("alice"), "ec2:CreateTags", "*", vec![("aws:TagKeys", Many(&[]))], Allow(Some("TagKeys"), Implied)),
        case("ForAnyValue one match", (Identity, FOR_ANY_VALUE), user("alice"), "ec2:CreateTags", "*", vec![("aws:TagKeys", Many(&["owner", "webserver"]))], Allow(Some("AnyTag"), Implied)),
        case("ForAnyValue missing key is false", (Identity, FOR_ANY_VALUE), user("alice"), "ec2:CreateTags", "*", vec![], Nothing),
        case("ForAllValues:StringNotLike all prefixed", (Identity, FOR_ALL_NOT_LIKE), user("alice"), "iam:TagUser", "*", vec![("aws:TagKeys", Many(&["key1:hr", "key1:personnel"]))], Allow(None, Implied)),
        case("ForAllValues:StringNotLike none prefixed", (Identity, FOR_ALL_NOT_LIKE), user("alice"), "iam:TagUser", "*", vec![("aws:TagKeys", Many(&["key2:audit"]))], Deny(Some("DenyRestrictedTags"))),
        case("ForAllValues:StringNotLike missing key matches", (Identity, FOR_ALL_NOT_LIKE), user("alice"), "iam:TagUser", "*", vec![], Deny(Some("DenyRestrictedTags"))),
        case("Null true without temporary credentials", (Identity, NULL_CHECK), user("alice"), "ec2:RunInstances", "*", vec![], Allow(Some("NoTempCreds"), Implied)),
        case("Null true with temporary credentials", (Identity, NULL_CHECK), user("alice"), "ec2:RunInstances", "*", vec![("aws:TokenIssueTime", One("2026-01-01T00:00:00Z"))], Nothing),
        case("Bool deny over plain HTTP", (Identity, SECURE_TRANSPORT), user("alice"), "s3:GetObject", "*", vec![("aws:SecureTransport", One("false"))], Deny(Some("DenyInsecure"))),
        case("Bool over TLS", (Identity, SECURE_TRANSPORT), user("alice"), "s3:GetObject", "*", vec![("aws:SecureTransport", One("true"))], Allow(None, Implied)),
        case("IpAddress v4 inside", (Identity, SOURCE_IP), user("alice"), "ec2:RunInstances", "*", vec![("aws:SourceIp", One("203.0.113.9"))], Allow(None, Implied)),
        case("IpAddress v4 outside", (Identity, SOURCE_IP), user("alice"), "ec2:RunInstances", "*", vec![("aws:SourceIp", One("198.51.100.1"))], Deny(Some("DenyOutside"))),
        case("IpAddress v6 inside", (Identity, SOURCE_IP), user("alice"), "ec2:RunInstances", "*", vec![("aws:SourceIp", One("2001:db8:1234:5678::42"))], Allow(None, Implied)),
        case("IpAddress v6 outside", (Identity, SOURCE_IP), user("alice"), "ec2:RunInstances", "*", vec![("aws:SourceIp", One("2001:db8:1234:9999::42"))], Deny(Some("DenyOutside"))),
        case("NotIpAddress with no source IP", (Identity, SOURCE_IP), user("alice"), "ec2:RunInstances", "*", vec![], Deny(Some("DenyOutside"))),
        case("date inside range", (Identity, DATE_RANGE), user("alice"), "service-prefix:action-name", "*", vec![("aws:CurrentTime", One("2020-05-15T12:00:00Z"))], Allow(Some("Q2"), Implied)),
        case("date after range", (Identity, DATE_RANGE), user("alice"), "service-prefix:action-name", "*", vec![("aws:CurrentTime", One("2020-07-01T00:00:00Z"))], Nothing),
        case("date given as epoch", (Identity, DATE_RANGE), user("alice"), "service-prefix:action-name", "*", vec![("aws:CurrentTime", One("1589544000"))], Allow(Some("Q2"), Implied)),
        case("numeric within limit", (Identity, NUMERIC), user("alice"), "s3:ListBucket", "arn:aws:s3:::amzn-s3-demo-bucket", vec![("s3:max-keys", One("10"))], Allow(Some("MaxKeys"), Implied)),
        case("numeric over limit", (Identity, NUMERIC), user("alice"), "s3:ListBucket", "arn:aws:s3:::amzn-s3-demo-bucket", vec![("s3:max-keys", One("11"))], Nothing),
        case("ArnLike matches role path by component", (Resource, ARN_LIKE), session(OTHER_ACCOUNT, "AdminOps", "s"), "kms:Decrypt", KEY_ARN, vec![], Allow(Some("AdminRoles"), Direct)),
        case("ArnLike rejects a user", (Resource, ARN_LIKE), user("Admin"), "kms:Decrypt", KEY_ARN, vec![], Nothing),
        case("action names ignore case", (Identity, CASE_INSENSITIVE_ACTION), user("alice"), "kms:Encrypt", "*", vec![], Allow(Some("Mixed"), Implied)),
        case("default key policy delegates to account users", (Resource, DEFAULT_KEY_POLICY), user("alice"), "kms:Encrypt", KEY_ARN, vec![], Allow(Some("Enable IAM User Permissions"), Account)),
        case("default key policy grants the root directly", (Resource, DEFAULT_KEY_POLICY), root(ACCOUNT), "kms:PutKeyPolicy", KEY_ARN, vec![], Allow(Some("Enable IAM User Permissions"), Direct)),
        case("default key policy ignores other accounts", (Resource, DEFAULT_KEY_POLICY), user_in(OTHER_ACCOUNT, "eve"), "kms:Encrypt", KEY_ARN, vec![], Nothing),
        case("role principal covers its session", (Resource, ROLE_KEY_POLICY), session(ACCOUNT, "Admin", "alice-cli"), "kms:Decrypt", KEY_ARN, vec![], Allow(Some("KeyUsers"), Direct)),
        case("session principal covers that session", (Resource, ROLE_KEY_POLICY), session(ACCOUNT, "Ops", "night-shift"), "kms:DescribeKey", KEY_ARN, vec![], Allow(Some("OneSession"), Direct)),
        case("session principal excludes other sessions", (Resource, ROLE_KEY_POLICY), session(ACCOUNT, "Ops", "day-shift"), "kms:DescribeKey", KEY_ARN, vec![], Nothing),
        case("aws/rds via RDS", (Resource, AWS_RDS_KEY_POLICY), user("alice"), "kms:GenerateDataKeyWithoutPlaintext", KEY_ARN, vec![("kms:ViaService", One("rds.us-east-1.amazonaws.com")), ("kms:CallerAccount", One(ACCOUNT))], Allow(Some("Allow access through RDS for all principals in the account that are authorized to use RDS"), Direct)),
        case("aws/rds directly is refused", (Resource, AWS_RDS_KEY_POLICY), user("alice"), "kms:Decrypt", KEY_ARN, vec![("kms:CallerAccount", One(ACCOUNT))], Nothing),
        case("aws/rds via another service", (Resource, AWS_RDS_KEY_POLICY), user("alice"), "kms:Decrypt", KEY_ARN, vec![("kms:ViaService", One("ec2.us-east-1.amazonaws.com")), ("kms:CallerAccount", One(ACCOUNT))], Nothing),
        case("aws/rds other account via RDS", (Resource, AWS_RDS_KEY_POLICY), user_in(OTHER_ACCOUNT, "eve"), "kms:Decrypt", KEY_ARN, vec![("kms:ViaService", One("rds.us-east-1.amazonaws.com")), ("kms:CallerAccount", One(OTHER_ACCOUNT))], Nothing),
        case("aws/rds metadata to the account", (Resource, AWS_RDS_KEY_POLICY), user("alice"), "kms:DescribeKey", KEY_ARN, vec![], Allow(Some("Allow direct access to key metadata to the account"), Account)),
        case("seed 001 role uses key B", (Resource, SEED_001_KEY_POLICY), session(ACCOUNT, "Admin", "copy"), "kms:ReEncryptTo", SEED_001_KEY_B, vec![], Allow(Some("Allow use of the key"), Direct)),
        case("seed 001 ListGrants needs the AWS-resource flag", (Resource, SEED_001_KEY_POLICY), session(ACCOUNT, "Admin", "copy"), "kms:ListGrants", SEED_001_KEY_B, vec![], Nothing),
        case("seed 001 ListGrants for an AWS resource", (Resource, SEED_001_KEY_POLICY), session(ACCOUNT, "Admin", "copy"), "kms:ListGrants", SEED_001_KEY_B, vec![("kms:GrantIsForAWSResource", One("true"))], Allow(Some("Allow attachment of persistent resources"), Direct)),
        case("seed 001 RevokeGrant flag false", (Resource, SEED_001_KEY_POLICY), session(ACCOUNT, "Admin", "copy"), "kms:RevokeGrant", SEED_001_KEY_B, vec![("kms:GrantIsForAWSResource", One("false"))], Nothing),
        case("seed 001 key B's own account is delegated", (Resource, SEED_001_KEY_POLICY), user_in(OTHER_ACCOUNT, "admin"), "kms:Decrypt", SEED_001_KEY_B, vec![], Allow(Some("Enable IAM User Permissions"), Account)),
        case("seed 001 administrator user of A is not named", (Resource, SEED_001_KEY_POLICY), user("administrator"), "kms:CreateGrant", SEED_001_KEY_B, vec![], Nothing),
        case("seed 001 IAM policy on the key", (Identity, SEED_001_IAM_POLICY), session(ACCOUNT, "Admin", "copy"), "kms:RetireGrant", SEED_001_KEY_B, vec![], Allow(Some("AllowUseOfTheKey"), Implied)),
        case("seed 001 IAM policy other key", (Identity, SEED_001_IAM_POLICY), session(ACCOUNT, "Admin", "copy"), "kms:Decrypt", KEY_ARN, vec![], Nothing),
        case("seed 001 IAM grant statement with JSON true", (Identity, SEED_001_IAM_POLICY), session(ACCOUNT, "Admin", "copy"), "kms:ListGrants", SEED_001_KEY_B, vec![("kms:GrantIsForAWSResource", One("true"))], Allow(Some("AllowAttachmentOfPersistentResources"), Implied)),
        case("deny with owner exception spares the owner", (Resource, DENY_EXCEPT_OWNER), user("alice"), "kms:Decrypt", KEY_ARN, vec![("kms:CallerAccount", One(ACCOUNT))], Allow(Some("Enable IAM User Permissions"), Account)),
        case("deny with owner exception stops outsiders", (Resource, DENY_EXCEPT_OWNER), user_in(OTHER_ACCOUNT, "eve"), "kms:Decrypt", KEY_ARN, vec![("kms:CallerAccount", One(OTHER_ACCOUNT))], Deny(Some("DenyOutsiders"))),
        case("resource deny naming the account covers its users", (Resource, DENY_ACCOUNT), user("alice"), "kms:ScheduleKeyDeletion", KEY_ARN, vec![], Deny(Some("DenyAccount"))),
        case("trust policy admits the service", (Trust, EC2_TRUST), service("ec2.amazonaws.com"), "sts:AssumeRole", "arn:aws:iam::111122223333:role/R", vec![], Allow(Some("EC2"), Direct)),
        case("trust policy refuses a user", (Trust, EC2_TRUST), user("alice"), "sts:AssumeRole", "arn:aws:iam::111122223333:role/R", vec![], Nothing),
        case("trust policy refuses another service", (Trust, EC2_TRUST), service("lambda.amazonaws.com"), "sts:AssumeRole", "arn:aws:iam::111122223333:role/R", vec![], Nothing),
        case("cross-account trust with MFA", (Trust, CROSS_ACCOUNT_TRUST), user("alice"), "sts:AssumeRole", "arn:aws:iam::444455556666:role/R", vec![("aws:MultiFactorAuthPresent", One("true"))], Allow(Some("TrustA"), Account)),
        case("cross-account trust without MFA", (Trust, CROSS_ACCOUNT_TRUST), user("alice"), "sts:AssumeRole", "arn:aws:iam::444455556666:role/R", vec![], Nothing),
        case("statements without Resource or Action never apply", (Resource, INERT_STATEMENTS), user("alice"), "kms:Encrypt", KEY_ARN, vec![], Nothing),
        case("encryption context key names ignore case", (Resource, ENCRYPTION_CONTEXT), user("alice"), "kms:Decrypt", KEY_ARN, vec![("kms:encryptioncontext:appname", One("ExampleApp")), ("kms:EncryptionContextKeys", Many(&["AppName"]))], Allow(Some("AppOnly"), Account)),
        case("encryption context values are case-sensitive", (Resource, ENCRYPTION_CONTEXT), user("alice"), "kms:Decrypt", KEY_ARN, vec![("kms:EncryptionContext:AppName", One("exampleapp"))], Nothing),
        case("encryption context extra pair refused", (Resource, ENCRYPTION_CONTEXT), user("alice"), "kms:Decrypt", KEY_ARN, vec![("kms:EncryptionContext:AppName", One("ExampleApp")), ("kms:EncryptionContextKeys", Many(&["AppName", "Other"]))], Nothing),
    ]
}

#[test]
fn documented_examples_evaluate_as_aws_does() -> Result<(), PolicyError> {
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let policy = PolicyDocument::parse(case.policy, case.kind)?;
        let context = context(&case.context);
        let request = AuthzRequest {
            principal: &case.caller,
            action: case.action,
            resource: case.resource,
            context: &context,
        };
        let got = outcome(&policy.evaluate(&request));
        if got != expected(case.expect) {
            failures.push(format!(
                "{}: expected {:?}, got {got:?}",
                case.name, case.expect
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn evaluate_all_combines_identity_policies() -> Result<(), PolicyError> {
    let allow = PolicyDocument::parse(SEED_001_IAM_POLICY, Identity)?;
    let deny = PolicyDocument::parse(
        r#"{"Version":"2012-10-17","Statement":{"Sid":"NoDecrypt","Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}}"#,
        Identity,
    )?;
    let caller = session(ACCOUNT, "Admin", "copy");
    let context = ContextKeys::new();
    let request = |action| AuthzRequest {
        principal: &caller,
        action,
        resource: SEED_001_KEY_B,
        context: &context,
    };
    assert_eq!(
        evaluate_all([&allow, &deny], &request("kms:Decrypt")),
        Evaluation::ExplicitDeny {
            sid: Some("NoDecrypt".into())
        }
    );
    assert_eq!(
        evaluate_all([&deny, &allow], &request("kms:Encrypt")),
        Evaluation::Allow {
            sid: Some("AllowUseOfTheKey".into()),
            principal_match: Implied
        }
    );
    assert_eq!(
        evaluate_all([&deny], &request("kms:Encrypt")),
        Evaluation::NotApplicable
    );
    assert_eq!(
        evaluate_all([], &request("kms:Encrypt")),
        Evaluation::NotApplicable
    );
    Ok(())
}

#[test]
fn allow_prefers_a_direct_match_over_account_delegation() -> Result<(), PolicyError> {
    let policy = PolicyDocument::parse(SEED_001_KEY_POLICY, Resource)?;
    let both = PolicyDocument::parse(
        r#"{"Version":"2012-10-17","Statement":[
          {"Sid":"Account","Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"},
          {"Sid":"Alice","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:Encrypt","Resource":"*"}]}"#,
        Resource,
    )?;
    let alice = user("alice");
    let context = ContextKeys::new();
    let request = AuthzRequest {
        principal: &alice,
        action: "kms:Encrypt",
        resource: KEY_ARN,
        context: &context,
    };
    assert_eq!(
        both.evaluate(&request),
        Evaluation::Allow {
            sid: Some("Alice".into()),
            principal_match: Direct
        }
    );
    assert_eq!(policy.statements().len(), 3);
    assert_eq!(
        policy.statements().first().and_then(|s| s.sid()),
        Some("Enable IAM User Permissions")
    );
    Ok(())
}

/// (kind, policy, a fragment the error message must contain)
const INVALID: &[(PolicyKind, &str, &str)] = &[
    (Identity, "not json", "Syntax errors in policy"),
    (Identity, "[]", "must be a JSON object"),
    (
        Identity,
        r#"{"Version":"2012-10-17"}"#,
        "at least one statement",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":[]}"#,
        "at least one statement",
    ),
    (
        Identity,
        r#"{"Version":"2013-01-01","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#,
        "Version",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Foo":1,"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*"}}"#,
        "Unknown field Foo",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effects":"Allow","Action":"s3:*","Resource":"*"}}"#,
        "Statement 1: Unknown field Effects",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Action":"s3:*","Resource":"*"}}"#,
        "Missing required field Effect",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"allow","Action":"s3:*","Resource":"*"}}"#,
        "Invalid Effect",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*"}}"#,
        "Policy document should not specify a principal.",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Sid":"S","Effect":"Allow","Action":"s3:*"}}"#,
        "Statement 1 (Sid \"S\"): Missing required field Resource",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Resource":"*"}}"#,
        "Missing required field Action",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","NotAction":"iam:*","Resource":"*"}}"#,
        "Action and NotAction cannot be used together",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"Encrypt","Resource":"*"}}"#,
        "prefaced by a vendor",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":[],"Resource":"*"}}"#,
        "must not be empty",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"bucket"}}"#,
        "must be in ARN format",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::b/${aws:username"}}"#,
        "unterminated policy variable",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Allow","Action":"s3:*","Resource":"*"},{"Sid":"A","Effect":"Deny","Action":"s3:*","Resource":"*"}]}"#,
        "must be unique",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"StringEqualz":{"a:b":"c"}}}}"#,
        "Invalid Condition type : StringEqualz",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"tomorrow"}}}}"#,
        "not a valid date",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"NumericEquals":{"s3:max-keys":"ten"}}}}"#,
        "not a valid number",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/99"}}}}"#,
        "not a valid IP address or CIDR block",
    ),
    (
        Identity,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"maybe"}}}}"#,
        "not a valid boolean",
    ),
    (
        Resource,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Resource":"*"}}"#,
        "Missing required field Principal",
    ),
    (
        Resource,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/*"},"Action":"kms:*","Resource":"*"}}"#,
        "Invalid principal in policy",
    ),
    (
        Resource,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:*","Resource":"*"}}"#,
        "Invalid principal in policy: \"AWS\":\"alice\"",
    ),
    (
        Resource,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":"arn:aws:iam::111122223333:root","Action":"kms:*","Resource":"*"}}"#,
        "Invalid principal in policy",
    ),
    (
        Resource,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotPrincipal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"}}"#,
        "NotPrincipal can only be used with",
    ),
    (
        Resource,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Principal":"*","NotPrincipal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"}}"#,
        "Principal and NotPrincipal cannot be used together",
    ),
    (
        Trust,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole","Resource":"*"}}"#,
        "Has prohibited field Resource",
    ),
    (
        Trust,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"sts:AssumeRole"}}"#,
        "Missing required field Principal",
    ),
    (
        Trust,
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","NotPrincipal":{"AWS":"111122223333"},"Action":"sts:AssumeRole"}}"#,
        "Has prohibited field NotPrincipal",
    ),
];

#[test]
fn invalid_documents_are_rejected_with_a_useful_message() {
    let mut failures = Vec::new();
    for (kind, policy, fragment) in INVALID {
        match PolicyDocument::parse(policy, *kind) {
            Ok(_) => failures.push(format!("accepted: {policy}")),
            Err(error) if !error.to_string().contains(fragment) => {
                failures.push(format!(
                    "{policy}\n  expected message containing {fragment:?}, got {error}"
                ));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn documented_policies_parse_for_every_kind_they_belong_to() -> Result<(), PolicyError> {
    for text in [
        DEFAULT_KEY_POLICY,
        AWS_RDS_KEY_POLICY,
        SEED_001_KEY_POLICY,
        NOT_PRINCIPAL,
        INERT_STATEMENTS,
    ] {
        PolicyDocument::parse(text, Resource)?;
    }
    for text in [
        NOT_ACTION,
        NOT_RESOURCE,
        HOME_PREFIX,
        SEED_001_IAM_POLICY,
        SOURCE_IP,
    ] {
        PolicyDocument::parse(text, Identity)?;
    }
    PolicyDocument::parse(EC2_TRUST, Trust)?;
    Ok(())
}
