//! Key policies: GetKeyPolicy, PutKeyPolicy, ListKeyPolicies, and the checks every new
//! key policy passes (syntax, known principals, size, the lockout safety check).

use kura_policy::{PolicyDocument, PolicyKind};
use serde::Serialize;

use super::{Call, Empty};
use crate::KeyEventKind;
use crate::error::{KmsError, KmsResult};
use crate::operation::Operation;
use crate::resolve::Aliases;
use crate::validate::Validator;
use crate::wire::KeyRequest;

/// Every key has exactly one policy, and this is its name.
const POLICY_NAME: &str = "default";
/// AWS's documented maximum size of a key policy document.
const MAX_POLICY_BYTES: usize = 32 * 1024;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetKeyPolicyResponse {
    policy: String,
    policy_name: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListKeyPoliciesResponse {
    policy_names: [&'static str; 1],
    truncated: bool,
}

impl Call<'_> {
    pub fn get_key_policy(&mut self, request: KeyRequest) -> KmsResult<GetKeyPolicyResponse> {
        let mut v = Validator::new();
        check_policy_name(&mut v, request.policy_name.as_deref());
        let key = self.required_target(
            Operation::GetKeyPolicy,
            &request.key_id,
            Aliases::Refused,
            v,
        )?;
        Ok(GetKeyPolicyResponse {
            policy: key.record.policy.clone(),
            policy_name: POLICY_NAME,
        })
    }

    pub fn list_key_policies(&mut self, request: KeyRequest) -> KmsResult<ListKeyPoliciesResponse> {
        let mut v = Validator::new();
        super::check_paging(&mut v, request.limit, request.marker.as_deref());
        self.required_target(
            Operation::ListKeyPolicies,
            &request.key_id,
            Aliases::Refused,
            v,
        )?;
        Ok(ListKeyPoliciesResponse {
            policy_names: [POLICY_NAME],
            truncated: false,
        })
    }

    pub fn put_key_policy(&mut self, request: KeyRequest) -> KmsResult<Empty> {
        let mut v = Validator::new();
        check_policy_name(&mut v, request.policy_name.as_deref());
        v.required("policy", &request.policy);
        v.length("policy", request.policy.as_deref(), 1, 131_072);
        let op = Operation::PutKeyPolicy;
        let key = self.required_target(op, &request.key_id, Aliases::Refused, v)?;
        let policy = request.policy.unwrap_or_default();
        let bypass = request.bypass_policy_lockout_safety_check.unwrap_or(false);
        self.check_new_policy(&key.arn, &key.record.account, &policy, bypass)?;
        let updated = self.update_key(&key, op, |record| {
            record.policy = policy;
            Ok(())
        })?;
        self.kms.publish(
            KeyEventKind::PolicyChanged,
            &updated.record.account,
            updated.record.id,
        );
        Ok(Empty {})
    }

    /// The checks AWS makes on a key policy before accepting it (CreateKey, PutKeyPolicy).
    pub(crate) fn check_new_policy(
        &self,
        key_arn: &str,
        key_account: &str,
        text: &str,
        bypass_lockout_check: bool,
    ) -> KmsResult<()> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(KmsError::LimitExceeded(format!(
                "The key policy is {} bytes; a key policy can be at most {MAX_POLICY_BYTES} bytes.",
                text.len()
            )));
        }
        let document = PolicyDocument::parse(text, PolicyKind::Resource)
            .map_err(|e| KmsError::MalformedPolicyDocument(e.to_string()))?;
        let unknown: Vec<String> = document
            .statements()
            .iter()
            .flat_map(|statement| statement.aws_principals())
            .filter(|reference| !self.kms.iam.knows(reference))
            .map(|reference| format!("{reference:?}"))
            .collect();
        if !unknown.is_empty() {
            return Err(KmsError::MalformedPolicyDocument(format!(
                "Policy contains a statement with one or more invalid principals. Unknown: {}",
                unknown.join(", ")
            )));
        }
        if !bypass_lockout_check
            && self
                .kms
                .decide(
                    self.ctx,
                    Operation::PutKeyPolicy.action(),
                    key_arn,
                    key_account,
                    &document,
                    &self.kms.base_context(self.ctx),
                )
                .is_err()
        {
            return Err(KmsError::MalformedPolicyDocument(
                "The new key policy will not allow you to update the key policy in the future."
                    .into(),
            ));
        }
        Ok(())
    }
}

fn check_policy_name(v: &mut Validator, name: Option<&str>) {
    v.length("policyName", name, 1, 128);
    if let Some(name) = name.filter(|n| *n != POLICY_NAME) {
        v.problem(format!(
            "Value '{name}' at 'policyName' failed to satisfy constraint: the only valid policy name is '{POLICY_NAME}'"
        ));
    }
}
