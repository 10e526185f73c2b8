//! The KMS error enum and its one mapping to AWS error codes.

use kura_edge::ApiError;
use kura_store::StoreError;

/// Every way a KMS operation can fail. Converted to the wire exactly once, in
/// `From<KmsError> for ApiError`, with no wildcard arm.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{arn} is disabled.")]
    Disabled { arn: String },
    #[error("The request would have succeeded, but the DryRun option is set.")]
    DryRun,
    #[error("The key ID in the request does not identify a CMK that can perform this operation.")]
    IncorrectKey,
    #[error("{0}")]
    InvalidAliasName(String),
    #[error("{0}")]
    InvalidArn(String),
    /// Malformed, tampered, or wrong-context ciphertext. AWS sends no message.
    #[error("")]
    InvalidCiphertext,
    #[error("{0}")]
    InvalidGrantId(String),
    #[error("{0}")]
    InvalidGrantToken(String),
    #[error("{0}")]
    InvalidKeyUsage(String),
    #[error("Invalid marker: '{0}'")]
    InvalidMarker(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Serialization(String),
    #[error("{0}")]
    Tag(String),
    #[error("Operation {0} is not known to the KMS API.")]
    UnknownOperation(String),
    #[error("{0}")]
    UnsupportedOperation(String),
    #[error("{0}")]
    Validation(String),
    /// A fault of the server itself; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for KmsError {
    fn from(e: StoreError) -> Self {
        KmsError::Internal(e.to_string())
    }
}

impl From<kura_crypto::CryptoError> for KmsError {
    fn from(e: kura_crypto::CryptoError) -> Self {
        KmsError::Internal(format!("crypto: {e}"))
    }
}

impl From<KmsError> for ApiError {
    fn from(error: KmsError) -> Self {
        // Real AWS answers every KMS client error with HTTP 400 (recorded against AWS in
        // LocalStack's snapshot tests), even where the Smithy model says 404/409/412; SDKs
        // dispatch on `__type`, and retry only on the 5xx server faults below.
        let code = match &error {
            KmsError::AccessDenied(_) => "AccessDeniedException",
            KmsError::AlreadyExists(_) => "AlreadyExistsException",
            KmsError::Disabled { .. } => "DisabledException",
            KmsError::DryRun => "DryRunOperationException",
            KmsError::IncorrectKey => "IncorrectKeyException",
            KmsError::InvalidAliasName(_) => "InvalidAliasNameException",
            KmsError::InvalidArn(_) => "InvalidArnException",
            KmsError::InvalidCiphertext => "InvalidCiphertextException",
            KmsError::InvalidGrantId(_) => "InvalidGrantIdException",
            KmsError::InvalidGrantToken(_) => "InvalidGrantTokenException",
            KmsError::InvalidKeyUsage(_) => "InvalidKeyUsageException",
            KmsError::InvalidMarker(_) => "InvalidMarkerException",
            KmsError::InvalidState(_) => "KMSInvalidStateException",
            KmsError::LimitExceeded(_) => "LimitExceededException",
            KmsError::MalformedPolicyDocument(_) => "MalformedPolicyDocumentException",
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::Serialization(_) => "SerializationException",
            KmsError::Tag(_) => "TagException",
            KmsError::UnknownOperation(_) => "UnknownOperationException",
            KmsError::UnsupportedOperation(_) => "UnsupportedOperationException",
            KmsError::Validation(_) => "ValidationException",
            KmsError::Internal(detail) => {
                tracing::error!(%detail, "KMS internal error");
                return ApiError::internal("KMSInternalException");
            }
        };
        ApiError::client(code, error.to_string())
    }
}

pub type KmsResult<T> = Result<T, KmsError>;
