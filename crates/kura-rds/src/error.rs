//! The RDS error enum and its one mapping to AWS error codes.
//!
//! Wire codes follow botocore's RDS model, where the code on the wire is often not the
//! shape name (`DBInstanceNotFoundFault` is sent as `DBInstanceNotFound`, 404).

use kura_edge::ApiError;
use kura_store::StoreError;

use crate::model::SnapshotKind;

#[derive(Debug, thiserror::Error)]
pub enum RdsError {
    #[error("{0}")]
    AccessDenied(String),
    #[error("DBCluster {0} already exists")]
    ClusterAlreadyExists(String),
    #[error("DBCluster {0} not found.")]
    ClusterNotFound(String),
    #[error("DBInstance {0} already exists")]
    InstanceAlreadyExists(String),
    #[error("DBInstance {0} not found.")]
    InstanceNotFound(String),
    #[error("{0}")]
    InvalidClusterState(String),
    #[error("{kind} {id} not found.", kind = .0.element(), id = .1)]
    SnapshotNotFound(crate::model::SnapshotKind, String),
    #[error(
        "Cannot create the snapshot because a snapshot with the identifier {1} already exists."
    )]
    SnapshotAlreadyExists(crate::model::SnapshotKind, String),
    #[error("{1}")]
    InvalidSnapshotState(crate::model::SnapshotKind, String),
    #[error("{0}")]
    SharedSnapshotQuotaExceeded(String),
    #[error("{0}")]
    InvalidInstanceState(String),
    #[error("{0}")]
    InvalidParameterCombination(String),
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("{0}")]
    KmsKeyNotAccessible(String),
    #[error("The request must contain the parameter {0}")]
    MissingParameter(String),
    #[error("The action {0} is not valid for this web service.")]
    InvalidAction(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for RdsError {
    fn from(e: StoreError) -> Self {
        RdsError::Internal(e.to_string())
    }
}

impl From<RdsError> for ApiError {
    fn from(error: RdsError) -> Self {
        let (code, status) = match &error {
            RdsError::AccessDenied(_) => ("AccessDenied", 403),
            RdsError::ClusterAlreadyExists(_) => ("DBClusterAlreadyExistsFault", 400),
            RdsError::ClusterNotFound(_) => ("DBClusterNotFoundFault", 404),
            RdsError::InstanceAlreadyExists(_) => ("DBInstanceAlreadyExists", 400),
            RdsError::InstanceNotFound(_) => ("DBInstanceNotFound", 404),
            RdsError::InvalidClusterState(_) => ("InvalidDBClusterStateFault", 400),
            RdsError::SnapshotNotFound(kind, _) => (
                match kind {
                    SnapshotKind::Instance => "DBSnapshotNotFound",
                    SnapshotKind::Cluster => "DBClusterSnapshotNotFoundFault",
                },
                404,
            ),
            RdsError::SnapshotAlreadyExists(kind, _) => (
                match kind {
                    SnapshotKind::Instance => "DBSnapshotAlreadyExists",
                    SnapshotKind::Cluster => "DBClusterSnapshotAlreadyExistsFault",
                },
                400,
            ),
            RdsError::InvalidSnapshotState(kind, _) => (
                match kind {
                    SnapshotKind::Instance => "InvalidDBSnapshotState",
                    SnapshotKind::Cluster => "InvalidDBClusterSnapshotStateFault",
                },
                400,
            ),
            RdsError::SharedSnapshotQuotaExceeded(_) => ("SharedSnapshotQuotaExceeded", 400),
            RdsError::InvalidInstanceState(_) => ("InvalidDBInstanceState", 400),
            RdsError::InvalidParameterCombination(_) => ("InvalidParameterCombination", 400),
            RdsError::InvalidParameterValue(_) => ("InvalidParameterValue", 400),
            RdsError::KmsKeyNotAccessible(_) => ("KMSKeyNotAccessibleFault", 400),
            RdsError::MissingParameter(_) => ("MissingParameter", 400),
            RdsError::InvalidAction(_) => ("InvalidAction", 400),
            RdsError::Unsupported(_) => ("InvalidParameterValue", 400),
            RdsError::Internal(detail) => {
                tracing::error!(%detail, "RDS internal error");
                return ApiError::internal("InternalFailure");
            }
        };
        ApiError::new(code, status, error.to_string())
    }
}

pub type RdsResult<T> = Result<T, RdsError>;
