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

use std::collections::BTreeMap;
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
use crate::model::{HeldGrant, StorageRecord};

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

/// A CreateGrant request giving the service-linked role `role_arn` the use of `key_arn`
/// for `operations`, only with an encryption context containing `context`.
fn service_grant(
    key_arn: &str,
    role_arn: &str,
    operations: &[&str],
    context: &BTreeMap<String, String>,
    name: &str,
) -> Value {
    json!({
        "KeyId": key_arn,
        "GranteePrincipal": role_arn,
        "RetiringPrincipal": role_arn,
        "Operations": operations,
        "Constraints": { "EncryptionContextSubset": context },
        "Name": name,
    })
}

/// Which key an error is about; AWS words `KMSKeyNotAccessibleFault` after it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyRole {
    /// The key named for a new database.
    Specified,
    /// The key a snapshot copy is made under.
    Target,
    /// The key of the snapshot being copied or restored.
    Source,
}

impl KeyRole {
    /// The fault for a key the caller cannot use. A denial is passed on word for word
    /// (it names the principal, the action and the reason, as users see it on AWS).
    pub fn not_accessible(self, key: &str, error: &ApiError) -> RdsError {
        if error.code == "AccessDeniedException" {
            return RdsError::KmsKeyNotAccessible(error.message.clone());
        }
        let which = match self {
            Self::Specified => "Specified KMS key",
            Self::Target => "The target KMS key",
            Self::Source => "The source snapshot KMS key",
        };
        RdsError::KmsKeyNotAccessible(format!(
            "{which} [{key}] does not exist, is not enabled or you do not have permissions to access it. ({}: {})",
            error.code, error.message
        ))
    }
}

/// The encryption context binding a wrapped volume key to the resource that owns it.
pub(crate) fn owner_context(resource_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("aws:rds:db-id".to_owned(), resource_id.to_owned())])
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
    /// `resource_id`, under `key_id` (`None`: the account's `alias/aws/rds`), with a
    /// fresh volume key. Fails with `KMSKeyNotAccessibleFault` if the caller may not use
    /// the key.
    pub async fn new_storage_key(
        &self,
        ctx: &RequestContext,
        key_id: Option<&str>,
        resource_id: &str,
        role: KeyRole,
    ) -> RdsResult<NewStorageKey> {
        let requested = key_id.unwrap_or("alias/aws/rds");
        let storage = self
            .grant_to_service(ctx, requested, resource_id, role)
            .await?;
        let generated = self
            .call(
                &self.service_context(&ctx.caller.principal.account),
                "GenerateDataKey",
                json!({
                    "KeyId": storage.kms_key_arn,
                    "KeySpec": "AES_256",
                    "EncryptionContext": storage.encryption_context,
                }),
            )
            .await
            .map_err(|e| role.not_accessible(requested, &e))?;
        let key = decode_secret(&generated["Plaintext"])?;
        Ok(NewStorageKey {
            storage: StorageRecord {
                wrapped_key: generated["CiphertextBlob"].as_str().map(str::to_owned),
                ..storage
            },
            key,
        })
    }

    /// Sets up encryption for a new owner (`resource_id`) of an existing volume key:
    /// the same key material, wrapped under `key_id` for the new owner's context (a
    /// database restored from a snapshot under the snapshot's own KMS key).
    pub async fn wrap_for_new_owner(
        &self,
        ctx: &RequestContext,
        key_id: &str,
        resource_id: &str,
        volume_key: &SecretBytes,
        role: KeyRole,
    ) -> RdsResult<StorageRecord> {
        let storage = self
            .grant_to_service(ctx, key_id, resource_id, role)
            .await?;
        let plaintext = base64::engine::general_purpose::STANDARD.encode(volume_key.expose());
        let encrypted = self
            .call(
                &self.service_context(&ctx.caller.principal.account),
                "Encrypt",
                json!({
                    "KeyId": storage.kms_key_arn,
                    "Plaintext": plaintext,
                    "EncryptionContext": storage.encryption_context,
                }),
            )
            .await
            .map_err(|e| role.not_accessible(key_id, &e))?;
        Ok(StorageRecord {
            wrapped_key: encrypted["CiphertextBlob"].as_str().map(str::to_owned),
            ..storage
        })
    }

    /// The caller, via the service, checks the key and grants the service-linked role
    /// the use of it for the encryption context naming `resource_id`. This is the step
    /// that needs the caller's `kms:DescribeKey` and `kms:CreateGrant`.
    async fn grant_to_service(
        &self,
        ctx: &RequestContext,
        requested: &str,
        resource_id: &str,
        role: KeyRole,
    ) -> RdsResult<StorageRecord> {
        let on_behalf = ctx.on_behalf_via(SERVICE_PRINCIPAL);
        let described = self
            .call(&on_behalf, "DescribeKey", json!({ "KeyId": requested }))
            .await
            .map_err(|e| role.not_accessible(requested, &e))?;
        let arn = described["KeyMetadata"]["Arn"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let context = owner_context(resource_id);
        let role_arn = service_role_arn(&ctx.caller.principal.account);
        let grant = self
            .call(
                &on_behalf,
                "CreateGrant",
                service_grant(&arn, &role_arn, GRANT_OPERATIONS, &context, resource_id),
            )
            .await
            .map_err(|e| role.not_accessible(requested, &e))?;
        Ok(StorageRecord {
            encrypted: true,
            kms_key_arn: Some(arn),
            encryption_context: context,
            grant_id: grant["GrantId"].as_str().map(str::to_owned),
            ..StorageRecord::default()
        })
    }

    /// A grant of the service-linked role to itself, made through the grant it already
    /// holds, so that a snapshot keeps access to its key after its database is gone.
    pub async fn grant_for_snapshot(
        &self,
        account: &str,
        storage: &StorageRecord,
        name: &str,
    ) -> Result<Option<String>, ApiError> {
        let Some(arn) = &storage.kms_key_arn else {
            return Ok(None);
        };
        let role_arn = service_role_arn(account);
        let grant = self
            .call(
                &self.service_context(account),
                "CreateGrant",
                service_grant(
                    arn,
                    &role_arn,
                    GRANT_OPERATIONS,
                    &storage.encryption_context,
                    name,
                ),
            )
            .await?;
        Ok(grant["GrantId"].as_str().map(str::to_owned))
    }

    /// Lets the caller's service-linked role decrypt the volume key of a snapshot shared
    /// from another account: the caller (via the service) grants it on the source key,
    /// which needs `kms:CreateGrant` in both the key policy and the caller's IAM policy.
    /// Returns the volume key; the temporary grant is retired at once.
    pub async fn borrow_shared_key(
        &self,
        ctx: &RequestContext,
        source: &StorageRecord,
    ) -> RdsResult<SecretBytes> {
        let (key, held) = self.hold_shared_key(ctx, source).await?;
        self.release_held(&ctx.caller.principal.account, &held)
            .await;
        Ok(key)
    }

    /// As [`Self::borrow_shared_key`], but the grant stays until [`Self::release_held`]:
    /// a copy that kura resumes after a restart opens the source's key through it, as
    /// the service, without the caller.
    pub async fn hold_shared_key(
        &self,
        ctx: &RequestContext,
        source: &StorageRecord,
    ) -> RdsResult<(SecretBytes, HeldGrant)> {
        let account = ctx.caller.principal.account.clone();
        let arn = source.kms_key_arn.clone().unwrap_or_default();
        let role = KeyRole::Source;
        let role_arn = service_role_arn(&account);
        let grant = self
            .call(
                &ctx.on_behalf_via(SERVICE_PRINCIPAL),
                "CreateGrant",
                service_grant(
                    &arn,
                    &role_arn,
                    &["Decrypt", "DescribeKey", "RetireGrant"],
                    &source.encryption_context,
                    "kura-snapshot-copy",
                ),
            )
            .await
            .map_err(|e| role.not_accessible(&arn, &e))?;
        let held = HeldGrant {
            key_arn: arn.clone(),
            grant_id: grant["GrantId"].as_str().unwrap_or_default().to_owned(),
        };
        match self.unwrap(&account, source).await {
            Ok(key) => Ok((key, held)),
            Err(e) => {
                self.release_held(&account, &held).await;
                Err(role.not_accessible(&arn, &e))
            }
        }
    }

    /// Retires a grant from [`Self::hold_shared_key`].
    pub async fn release_held(&self, account: &str, held: &HeldGrant) {
        let storage = StorageRecord {
            kms_key_arn: Some(held.key_arn.clone()),
            grant_id: Some(held.grant_id.clone()),
            ..StorageRecord::default()
        };
        self.release(account, &storage).await;
    }

    /// Whether `key_arn` is an AWS managed key (such as `aws/rds`), asked as the service.
    pub async fn is_aws_managed(&self, account: &str, key_arn: &str) -> bool {
        self.call(
            &self.service_context(account),
            "DescribeKey",
            json!({ "KeyId": key_arn }),
        )
        .await
        .is_ok_and(|d| d["KeyMetadata"]["KeyManager"] == "AWS")
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
