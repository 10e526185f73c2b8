//! AWS managed policies that kura provides under their AWS ARNs.

use std::sync::{Arc, OnceLock};

use kura_policy::{PolicyDocument, PolicyKind};

use crate::{IamError, PolicySet};

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

pub(crate) fn policy_set(arns: &[String]) -> Result<PolicySet, IamError> {
    let documents = arns
        .iter()
        .map(|arn| managed_policy(arn))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(documents))
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
