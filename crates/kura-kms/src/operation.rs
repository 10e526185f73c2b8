//! The KMS operations: their names, IAM actions, read-only flags and the key states each
//! accepts — written down once, next to each other, so no handler can forget them.

use crate::error::KmsError;
use crate::model::{KeyRecord, KeyState};

macro_rules! operations {
    ($($variant:ident => $action:literal, read_only: $ro:literal, states: $rule:ident;)*) => {
        /// Every KMS operation kura implements.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Operation { $($variant,)* }

        impl Operation {
            pub fn parse(name: &str) -> Option<Self> {
                match name { $(stringify!($variant) => Some(Self::$variant),)* _ => None }
            }

            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => stringify!($variant),)* }
            }

            /// The IAM action a policy must allow (`kms:Encrypt`).
            pub fn action(self) -> &'static str {
                match self { $(Self::$variant => $action,)* }
            }

            /// CloudTrail's `readOnly`.
            pub fn read_only(self) -> bool {
                match self { $(Self::$variant => $ro,)* }
            }

            fn state_rule(self) -> StateRule {
                match self { $(Self::$variant => StateRule::$rule,)* }
            }
        }
    };
}

operations! {
    CancelKeyDeletion => "kms:CancelKeyDeletion", read_only: false, states: PendingDeletionOnly;
    CreateAlias => "kms:CreateAlias", read_only: false, states: NotPendingDeletion;
    CreateGrant => "kms:CreateGrant", read_only: false, states: EnabledOnly;
    CreateKey => "kms:CreateKey", read_only: false, states: Any;
    Decrypt => "kms:Decrypt", read_only: true, states: EnabledOnly;
    DeleteAlias => "kms:DeleteAlias", read_only: false, states: Any;
    DescribeKey => "kms:DescribeKey", read_only: true, states: Any;
    DisableKey => "kms:DisableKey", read_only: false, states: NotPendingDeletion;
    DisableKeyRotation => "kms:DisableKeyRotation", read_only: false, states: EnabledOnly;
    EnableKey => "kms:EnableKey", read_only: false, states: NotPendingDeletion;
    EnableKeyRotation => "kms:EnableKeyRotation", read_only: false, states: EnabledOnly;
    Encrypt => "kms:Encrypt", read_only: true, states: EnabledOnly;
    GenerateDataKey => "kms:GenerateDataKey", read_only: true, states: EnabledOnly;
    GenerateDataKeyWithoutPlaintext => "kms:GenerateDataKeyWithoutPlaintext", read_only: true, states: EnabledOnly;
    GenerateRandom => "kms:GenerateRandom", read_only: true, states: Any;
    GetKeyPolicy => "kms:GetKeyPolicy", read_only: true, states: Any;
    GetKeyRotationStatus => "kms:GetKeyRotationStatus", read_only: true, states: Any;
    ListAliases => "kms:ListAliases", read_only: true, states: Any;
    ListGrants => "kms:ListGrants", read_only: true, states: Any;
    ListKeyPolicies => "kms:ListKeyPolicies", read_only: true, states: Any;
    ListKeyRotations => "kms:ListKeyRotations", read_only: true, states: Any;
    ListKeys => "kms:ListKeys", read_only: true, states: Any;
    ListResourceTags => "kms:ListResourceTags", read_only: true, states: Any;
    ListRetirableGrants => "kms:ListRetirableGrants", read_only: true, states: Any;
    PutKeyPolicy => "kms:PutKeyPolicy", read_only: false, states: Any;
    ReEncrypt => "kms:ReEncrypt", read_only: true, states: EnabledOnly;
    RetireGrant => "kms:RetireGrant", read_only: false, states: Any;
    RevokeGrant => "kms:RevokeGrant", read_only: false, states: Any;
    RotateKeyOnDemand => "kms:RotateKeyOnDemand", read_only: false, states: EnabledOnly;
    ScheduleKeyDeletion => "kms:ScheduleKeyDeletion", read_only: false, states: NotPendingDeletion;
    TagResource => "kms:TagResource", read_only: false, states: NotPendingDeletion;
    UntagResource => "kms:UntagResource", read_only: false, states: NotPendingDeletion;
    UpdateAlias => "kms:UpdateAlias", read_only: false, states: NotPendingDeletion;
    UpdateKeyDescription => "kms:UpdateKeyDescription", read_only: false, states: NotPendingDeletion;
}

/// AWS KMS operations kura recognises but does not implement (asymmetric, HMAC, imported
/// material, custom key stores, multi-Region). They answer `UnsupportedOperationException`
/// rather than "unknown operation", so clients learn what is missing.
const NOT_IMPLEMENTED: &[&str] = &[
    "ConnectCustomKeyStore",
    "CreateCustomKeyStore",
    "DeleteCustomKeyStore",
    "DeleteImportedKeyMaterial",
    "DeriveSharedSecret",
    "DescribeCustomKeyStores",
    "DisconnectCustomKeyStore",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "GetKeyLastUsage",
    "GetParametersForImport",
    "GetPublicKey",
    "ImportKeyMaterial",
    "ReplicateKey",
    "Sign",
    "UpdateCustomKeyStore",
    "UpdatePrimaryRegion",
    "Verify",
    "VerifyMac",
];

/// Resolves an `X-Amz-Target` operation name.
pub fn lookup(name: &str) -> Result<Operation, KmsError> {
    if let Some(op) = Operation::parse(name) {
        return Ok(op);
    }
    if NOT_IMPLEMENTED.contains(&name) {
        return Err(KmsError::UnsupportedOperation(format!(
            "{name} is not supported by kura: it serves symmetric encryption keys only."
        )));
    }
    Err(KmsError::UnknownOperation(name.to_owned()))
}

/// Which key states an operation accepts (the AWS key-state table, symmetric keys).
#[derive(Clone, Copy, Debug)]
enum StateRule {
    Any,
    EnabledOnly,
    NotPendingDeletion,
    PendingDeletionOnly,
}

impl Operation {
    /// Fails with AWS's error and message if `key`'s state does not allow this operation.
    pub(crate) fn check_state(self, key: &KeyRecord) -> Result<(), KmsError> {
        let arn = key.arn();
        match (self.state_rule(), key.state) {
            (StateRule::Any, _)
            | (StateRule::EnabledOnly, KeyState::Enabled)
            | (StateRule::NotPendingDeletion, KeyState::Enabled | KeyState::Disabled)
            | (StateRule::PendingDeletionOnly, KeyState::PendingDeletion) => Ok(()),
            (StateRule::EnabledOnly, KeyState::Disabled) => Err(KmsError::Disabled { arn }),
            (StateRule::EnabledOnly | StateRule::NotPendingDeletion, KeyState::PendingDeletion) => {
                Err(KmsError::InvalidState(format!(
                    "{arn} is pending deletion."
                )))
            }
            (StateRule::PendingDeletionOnly, KeyState::Enabled | KeyState::Disabled) => Err(
                KmsError::InvalidState(format!("{arn} is not pending deletion.")),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknowns_are_classified() {
        assert_eq!(lookup("Encrypt").ok(), Some(Operation::Encrypt));
        assert_eq!(Operation::Encrypt.action(), "kms:Encrypt");
        assert!(matches!(
            lookup("Sign"),
            Err(KmsError::UnsupportedOperation(_))
        ));
        assert!(matches!(
            lookup("Frobnicate"),
            Err(KmsError::UnknownOperation(_))
        ));
        assert!(Operation::Decrypt.read_only());
        assert!(!Operation::DisableKey.read_only());
    }
}
