//! AWS managed policies that kura provides under their AWS ARNs.

use std::sync::{Arc, OnceLock};

use kura_policy::{PolicyDocument, PolicyKind};

use crate::IamError;

pub const ADMINISTRATOR_ACCESS: &str = "arn:aws:iam::aws:policy/AdministratorAccess";
pub const READ_ONLY_ACCESS: &str = "arn:aws:iam::aws:policy/ReadOnlyAccess";

const ADMINISTRATOR_ACCESS_DOCUMENT: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// Read-only access to every service kura serves: the describe/get/list/lookup actions.
const READ_ONLY_ACCESS_DOCUMENT: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [{
    "Effect": "Allow",
    "Action": [
      "kms:Describe*", "kms:Get*", "kms:List*",
      "iam:Get*", "iam:List*",
      "sts:GetCallerIdentity",
      "rds:Describe*", "rds:List*",
      "cloudtrail:Describe*", "cloudtrail:Get*", "cloudtrail:List*", "cloudtrail:LookupEvents"
    ],
    "Resource": "*"
  }]
}"#;

/// What ListPolicies and GetPolicy say about an AWS managed policy.
pub(crate) struct AwsManagedPolicy {
    pub arn: &'static str,
    pub name: &'static str,
    pub policy_id: &'static str,
    pub description: &'static str,
    pub document: &'static str,
    /// When AWS created the policy, in milliseconds since the epoch.
    pub created_millis: i64,
}

/// Every AWS managed policy kura provides, in name order.
pub(crate) const AWS_MANAGED: &[AwsManagedPolicy] = &[
    AwsManagedPolicy {
        arn: ADMINISTRATOR_ACCESS,
        name: "AdministratorAccess",
        policy_id: "ANPAIWMBCKSKIEE64ZLYK",
        description: "Provides full access to AWS services and resources.",
        document: ADMINISTRATOR_ACCESS_DOCUMENT,
        // 2015-02-06T18:39:46Z
        created_millis: 1_423_247_986_000,
    },
    AwsManagedPolicy {
        arn: READ_ONLY_ACCESS,
        name: "ReadOnlyAccess",
        policy_id: "ANPAILL3HVNFSB6DCOWYQ",
        description: "Provides read-only access to AWS services and resources.",
        document: READ_ONLY_ACCESS_DOCUMENT,
        // 2015-02-06T18:39:48Z
        created_millis: 1_423_247_988_000,
    },
];

/// The ARN prefix of AWS managed policies.
pub(crate) const AWS_MANAGED_PREFIX: &str = "arn:aws:iam::aws:policy/";

pub(crate) fn aws_managed(arn: &str) -> Option<&'static AwsManagedPolicy> {
    AWS_MANAGED.iter().find(|p| p.arn == arn)
}

/// The parsed document of a managed policy, by ARN.
pub(crate) fn managed_policy(arn: &str) -> Result<Arc<PolicyDocument>, IamError> {
    static ADMIN: OnceLock<Option<Arc<PolicyDocument>>> = OnceLock::new();
    static READ_ONLY: OnceLock<Option<Arc<PolicyDocument>>> = OnceLock::new();
    let parsed = |text: &str| {
        PolicyDocument::parse(text, PolicyKind::Identity)
            .ok()
            .map(Arc::new)
    };
    let document = match arn {
        ADMINISTRATOR_ACCESS => ADMIN.get_or_init(|| parsed(ADMINISTRATOR_ACCESS_DOCUMENT)),
        READ_ONLY_ACCESS => READ_ONLY.get_or_init(|| parsed(READ_ONLY_ACCESS_DOCUMENT)),
        _ => &None,
    };
    document
        .clone()
        .ok_or_else(|| IamError::UnknownPolicy(arn.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_documents_parse() {
        assert!(managed_policy(ADMINISTRATOR_ACCESS).is_ok());
        assert!(managed_policy(READ_ONLY_ACCESS).is_ok());
        assert!(managed_policy("arn:aws:iam::aws:policy/Unknown").is_err());
    }
}
