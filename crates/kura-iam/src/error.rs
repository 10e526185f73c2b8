//! The IAM error enum and its one mapping to AWS error codes.

use kura_edge::ApiError;
use kura_store::StoreError;

/// Every way an IAM or STS operation can fail. Converted to the wire exactly once, in
/// [`IamError::into_api_error`], with no wildcard arm.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the root key cannot unwrap the secret of access key {0}: was the data directory started with another root key?"
    )]
    Unwrap(String),
    #[error("crypto failure: {0}")]
    Crypto(#[from] kura_crypto::CryptoError),
    /// A fault of the server itself; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("unknown managed policy {0}")]
    UnknownPolicy(String),
    #[error("no such account {0}")]
    NoSuchAccount(String),
    #[error("no such user {0}")]
    NoSuchUser(String),
    #[error("access key {0} already belongs to another user")]
    AccessKeyInUse(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("{0}")]
    NoSuchEntity(String),
    #[error("{0}")]
    EntityAlreadyExists(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    DeleteConflict(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("The action {0} is not valid for this web service.")]
    InvalidAction(String),
}

/// Which API an error is answered in: the two share one enum but differ in the code of
/// a server fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    Iam,
    Sts,
}

impl IamError {
    /// The error as the client sees it.
    pub(crate) fn into_api_error(self, api: Api) -> ApiError {
        let fault = match api {
            Api::Iam => "ServiceFailure",
            Api::Sts => "InternalFailure",
        };
        let client =
            |code: &'static str, status: u16, message: String| ApiError::new(code, status, message);
        match self {
            IamError::Store(_)
            | IamError::Unwrap(_)
            | IamError::Crypto(_)
            | IamError::Internal(_) => {
                tracing::error!(error = %self, "IAM request failed");
                ApiError::internal(fault)
            }
            IamError::UnknownPolicy(arn) => client(
                "NoSuchEntity",
                404,
                format!("Policy {arn} does not exist or is not attachable."),
            ),
            IamError::NoSuchAccount(account) => client(
                "NoSuchEntity",
                404,
                format!("The account {account} cannot be found."),
            ),
            IamError::NoSuchUser(arn) => client(
                "NoSuchEntity",
                404,
                format!("The user {arn} cannot be found."),
            ),
            IamError::AccessKeyInUse(_) => client("EntityAlreadyExists", 409, self.to_string()),
            IamError::InvalidName(message) => client("ValidationError", 400, message),
            IamError::NoSuchEntity(message) => client("NoSuchEntity", 404, message),
            IamError::EntityAlreadyExists(message) => client("EntityAlreadyExists", 409, message),
            IamError::MalformedPolicyDocument(message) => {
                client("MalformedPolicyDocument", 400, message)
            }
            IamError::Validation(message) => client("ValidationError", 400, message),
            IamError::LimitExceeded(message) => client("LimitExceeded", 409, message),
            IamError::DeleteConflict(message) => client("DeleteConflict", 409, message),
            IamError::AccessDenied(message) => client("AccessDenied", 403, message),
            IamError::InvalidInput(message) => client("InvalidInput", 400, message),
            IamError::InvalidAction(_) => client("InvalidAction", 400, self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let e = IamError::NoSuchEntity("The user with name x cannot be found.".into())
            .into_api_error(Api::Iam);
        assert_eq!((e.code.as_ref(), e.status), ("NoSuchEntity", 404));
        let e = IamError::AccessDenied("no".into()).into_api_error(Api::Sts);
        assert_eq!((e.code.as_ref(), e.status), ("AccessDenied", 403));
        let e = IamError::Internal("detail".into()).into_api_error(Api::Sts);
        assert_eq!((e.code.as_ref(), e.status), ("InternalFailure", 500));
        assert!(!e.message.contains("detail"));
        let e = IamError::InvalidAction("Nope".into()).into_api_error(Api::Iam);
        assert_eq!(
            e.message,
            "The action Nope is not valid for this web service."
        );
    }
}
