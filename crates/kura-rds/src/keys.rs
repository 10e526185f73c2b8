//! How the database service uses the KMS: as a client like any other, through
//! [`Kms::invoke`], with every call authorized and audited.
//!
//! Two identities make the calls, as on AWS:
//! - the **caller**, via the service (`kms:ViaService = rds.<region>.amazonaws.com`), for
//!   what needs the caller's own permission: DescribeKey and CreateGrant — which is why a
//!   user needs `kms:CreateGrant` and `kms:DescribeKey` on a customer managed key;
//! - the service's **service-linked role** in the caller's account
//!   (`AWSServiceRoleForRDS`), for everything after: generating and decrypting the volume
//!   key, under the grant the caller gave it. A database can thus unlock again long after
//!   the request that created it — and stops being able to the moment the key is
//!   disabled or the grant revoked.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use base64::Engine as _;
use kura_crypto::SecretBytes;
use kura_edge::{
    ApiError, AuditDetails, AuditEvent, AuditSink, Caller, IdentityType, RequestContext,
    SessionIssuer,
};
use kura_kms::Kms;
use kura_policy::{Principal, PrincipalKind};
use kura_types::{Clock, Region};
use serde_json::{Value, json};

use crate::error::{RdsError, RdsResult};
use crate::model::StorageRecord;

pub(crate) const SERVICE_PRINCIPAL: &str = "rds.amazonaws.com";
const SERVICE_ROLE_NAME: &str = "AWSServiceRoleForRDS";
/// What the service's grant lets it do with the key.
const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
];

pub(crate) struct KmsAccess {
    kms: Arc<Kms>,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    region: Region,
}

/// The key material of a newly encrypted database.
pub(crate) struct NewStorageKey {
    pub storage: StorageRecord,
    pub key: SecretBytes,
}

/// The ARN of the service-linked role of `account`.
pub(crate) fn service_role_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/aws-service-role/{SERVICE_PRINCIPAL}/{SERVICE_ROLE_NAME}")
}

impl KmsAccess {
    pub fn new(
        kms: Arc<Kms>,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
        region: Region,
    ) -> Self {
        Self {
            kms,
            audit,
            clock,
            region,
        }
    }

    /// Sets up encryption for a new database whose encryption context names
    /// `resource_id`, under `key_id` (`None`: the account's `alias/aws/rds`).
    /// Fails with `KMSKeyNotAccessibleFault` if the caller may not use the key.
    pub async fn new_storage_key(
        &self,
        ctx: &RequestContext,
        key_id: Option<&str>,
        resource_id: &str,
    ) -> RdsResult<NewStorageKey> {
        let requested = key_id.unwrap_or("alias/aws/rds");
        let on_behalf = ctx.on_behalf_via(SERVICE_PRINCIPAL);
        let not_accessible = |error: ApiError| {
            RdsError::KmsKeyNotAccessible(format!(
                "Specified KMS key [{requested}] does not exist, is not enabled or you do not have permissions to access it. ({}: {})",
                error.code, error.message
            ))
        };
        let described = self
            .call(&on_behalf, "DescribeKey", json!({ "KeyId": requested }))
            .await
            .map_err(not_accessible)?;
        let arn = described["KeyMetadata"]["Arn"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let account = ctx.caller.principal.account.clone();
        let context = std::collections::BTreeMap::from([(
            "aws:rds:db-id".to_owned(),
            resource_id.to_owned(),
        )]);
        let role = service_role_arn(&account);
        let grant = self
            .call(
                &on_behalf,
                "CreateGrant",
                json!({
                    "KeyId": arn,
                    "GranteePrincipal": role,
                    "RetiringPrincipal": role,
                    "Operations": GRANT_OPERATIONS,
                    "Constraints": { "EncryptionContextSubset": context },
                    "Name": resource_id,
                }),
            )
            .await
            .map_err(not_accessible)?;
        let generated = self
            .call(
                &self.service_context(&account),
                "GenerateDataKey",
                json!({ "KeyId": arn, "KeySpec": "AES_256", "EncryptionContext": context }),
            )
            .await
            .map_err(not_accessible)?;
        let wrapped = generated["CiphertextBlob"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = decode_secret(&generated["Plaintext"])?;
        Ok(NewStorageKey {
            storage: StorageRecord {
                encrypted: true,
                kms_key_arn: Some(arn),
                wrapped_key: Some(wrapped),
                encryption_context: context,
                grant_id: grant["GrantId"].as_str().map(str::to_owned),
                ..StorageRecord::default()
            },
            key,
        })
    }

    /// Decrypts the volume key of a database, as the service, under its grant. The
    /// error is the KMS's own (DisabledException, AccessDeniedException, ...).
    pub async fn unwrap(
        &self,
        account: &str,
        storage: &StorageRecord,
    ) -> Result<SecretBytes, ApiError> {
        let response = self
            .call(
                &self.service_context(account),
                "Decrypt",
                json!({
                    "CiphertextBlob": storage.wrapped_key,
                    "KeyId": storage.kms_key_arn,
                    "EncryptionContext": storage.encryption_context,
                }),
            )
            .await?;
        decode_secret(&response["Plaintext"])
            .map_err(|e| ApiError::internal_logged("InternalFailure", e))
    }

    /// Retires the service's grant when a database is deleted.
    pub async fn release(&self, account: &str, storage: &StorageRecord) {
        let (Some(arn), Some(grant_id)) = (&storage.kms_key_arn, &storage.grant_id) else {
            return;
        };
        let retired = self
            .call(
                &self.service_context(account),
                "RetireGrant",
                json!({ "KeyId": arn, "GrantId": grant_id }),
            )
            .await;
        if let Err(error) = retired {
            tracing::warn!(key = %arn, %error, "could not retire the database's grant");
        }
    }

    /// One KMS call, recorded in the audit trail exactly as an external call would be.
    async fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| ApiError::internal_logged("InternalFailure", e))?;
        let mut details = AuditDetails::default();
        let outcome = self
            .kms
            .invoke(ctx, operation, &bytes, &mut details)
            .map_err(ApiError::from);
        let event = AuditEvent {
            ctx: ctx.clone(),
            event_source: "kms.amazonaws.com",
            event_name: operation.to_owned(),
            error: outcome.as_ref().err().cloned(),
            details,
        };
        self.audit.record(event).await?;
        let response = outcome?;
        serde_json::from_slice(&response)
            .map_err(|e| ApiError::internal_logged("InternalFailure", e))
    }

    /// A request context for the service-linked role of `account`, acting via the service.
    fn service_context(&self, account: &str) -> RequestContext {
        let role_arn = service_role_arn(account);
        let principal = Principal {
            arn: format!(
                "arn:aws:sts::{account}:assumed-role/{SERVICE_ROLE_NAME}/{SERVICE_PRINCIPAL}"
            ),
            account: account.to_owned(),
            kind: PrincipalKind::AssumedRole {
                role_arn: role_arn.clone(),
                session_name: SERVICE_PRINCIPAL.to_owned(),
            },
            user_id: format!("AROARDSSERVICELINKED:{SERVICE_PRINCIPAL}"),
            username: None,
        };
        RequestContext {
            request_id: uuid::Uuid::new_v4().to_string(),
            caller: Arc::new(Caller {
                principal,
                identity_type: IdentityType::AssumedRole,
                access_key_id: String::new(),
                session: Some(SessionIssuer {
                    role_arn,
                    role_id: "AROARDSSERVICELINKED".to_owned(),
                    role_name: SERVICE_ROLE_NAME.to_owned(),
                    created: self.clock.now(),
                }),
            }),
            region: self.region.clone(),
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            user_agent: "rds.amazonaws.com".to_owned(),
            time: self.clock.now(),
            via_service: Some(SERVICE_PRINCIPAL),
        }
    }
}

fn decode_secret(value: &Value) -> RdsResult<SecretBytes> {
    let text = value
        .as_str()
        .ok_or_else(|| RdsError::Internal("the KMS returned no plaintext".into()))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(SecretBytes::new)
        .map_err(|e| RdsError::Internal(format!("undecodable plaintext from the KMS: {e}")))
}
