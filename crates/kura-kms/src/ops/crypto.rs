//! Cryptographic operations: Encrypt, Decrypt, ReEncrypt, GenerateDataKey,
//! GenerateDataKeyWithoutPlaintext, GenerateRandom.

use std::sync::Arc;

use kura_crypto::{CiphertextHeader, EncryptionContext, SecretBytes};
use serde::Serialize;

use super::Call;
use super::grants::check_token_formats;
use super::keys::check_grant_tokens;
use crate::authz::RequestFacts;
use crate::error::{KmsError, KmsResult};
use crate::operation::Operation;
use crate::registry::KeyEntry;
use crate::resolve::Aliases;
use crate::validate::Validator;
use crate::wire::{Context, CryptoRequest, blob};

const MAX_PLAINTEXT: usize = 4096;
const MAX_CIPHERTEXT: usize = 6144;
const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
const ENCRYPTION_ALGORITHMS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "SM2PKE",
];

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EncryptResponse {
    #[serde(serialize_with = "blob::serialize")]
    ciphertext_blob: Vec<u8>,
    key_id: String,
    encryption_algorithm: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DecryptResponse {
    key_id: String,
    #[serde(with = "secret_blob")]
    plaintext: SecretBytes,
    encryption_algorithm: &'static str,
    key_material_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ReEncryptResponse {
    #[serde(serialize_with = "blob::serialize")]
    ciphertext_blob: Vec<u8>,
    source_key_id: String,
    key_id: String,
    source_encryption_algorithm: &'static str,
    destination_encryption_algorithm: &'static str,
    source_key_material_id: String,
    destination_key_material_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DataKeyResponse {
    #[serde(serialize_with = "blob::serialize")]
    ciphertext_blob: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none", with = "optional_secret_blob")]
    plaintext: Option<SecretBytes>,
    key_id: String,
    key_material_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RandomResponse {
    #[serde(with = "secret_blob")]
    plaintext: SecretBytes,
}

/// Secrets serialized as base64 blobs straight from their zeroizing buffers.
mod secret_blob {
    use kura_crypto::SecretBytes;

    pub fn serialize<S: serde::Serializer>(secret: &SecretBytes, s: S) -> Result<S::Ok, S::Error> {
        super::blob::serialize(secret.expose(), s)
    }
}

mod optional_secret_blob {
    use kura_crypto::SecretBytes;

    pub fn serialize<S: serde::Serializer>(
        secret: &Option<SecretBytes>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match secret {
            Some(secret) => super::blob::serialize(secret.expose(), s),
            None => s.serialize_none(),
        }
    }
}

/// The plaintext and the material version a successful decryption used.
struct Decrypted {
    key: Arc<KeyEntry>,
    plaintext: SecretBytes,
    material_id: String,
}

impl Call<'_> {
    pub fn encrypt(&mut self, request: CryptoRequest) -> KmsResult<EncryptResponse> {
        let mut v = Validator::new();
        v.required("keyId", &request.key_id);
        v.length("keyId", request.key_id.as_deref(), 1, 2048);
        v.required("plaintext", &request.plaintext);
        v.blob_length("plaintext", request.plaintext.as_deref(), 1, MAX_PLAINTEXT);
        v.one_of(
            "encryptionAlgorithm",
            request.encryption_algorithm.as_deref(),
            ENCRYPTION_ALGORITHMS,
        );
        check_grant_tokens(&mut v, request.grant_tokens.as_deref());
        v.finish()?;
        check_token_formats(request.grant_tokens.as_deref())?;
        let context = request.encryption_context.unwrap_or_default();
        let key = self.crypto_target(
            Operation::Encrypt,
            request.key_id.as_deref().unwrap_or_default(),
            &context,
        )?;
        check_algorithm(&key, request.encryption_algorithm.as_deref(), "Encrypt")?;
        refuse_dry_run(request.dry_run)?;
        let plaintext = SecretBytes::new(request.plaintext.unwrap_or_default());
        let (ciphertext_blob, _) = seal(&key, &context, plaintext.expose())?;
        Ok(EncryptResponse {
            ciphertext_blob,
            key_id: key.arn.clone(),
            encryption_algorithm: SYMMETRIC_DEFAULT,
        })
    }

    pub fn decrypt(&mut self, request: CryptoRequest) -> KmsResult<DecryptResponse> {
        let mut v = Validator::new();
        v.required("ciphertextBlob", &request.ciphertext_blob);
        v.blob_length(
            "ciphertextBlob",
            request.ciphertext_blob.as_deref(),
            1,
            MAX_CIPHERTEXT,
        );
        v.length("keyId", request.key_id.as_deref(), 1, 2048);
        v.one_of(
            "encryptionAlgorithm",
            request.encryption_algorithm.as_deref(),
            ENCRYPTION_ALGORITHMS,
        );
        check_grant_tokens(&mut v, request.grant_tokens.as_deref());
        v.finish()?;
        check_token_formats(request.grant_tokens.as_deref())?;
        let context = request.encryption_context.unwrap_or_default();
        let decrypted = self.open(
            Operation::Decrypt.action(),
            request.ciphertext_blob.as_deref().unwrap_or_default(),
            request.key_id.as_deref(),
            &context,
            request.encryption_algorithm.as_deref(),
            request.dry_run,
        )?;
        Ok(DecryptResponse {
            key_id: decrypted.key.arn.clone(),
            plaintext: decrypted.plaintext,
            encryption_algorithm: SYMMETRIC_DEFAULT,
            key_material_id: decrypted.material_id,
        })
    }

    pub fn re_encrypt(&mut self, request: CryptoRequest) -> KmsResult<ReEncryptResponse> {
        let mut v = Validator::new();
        v.required("ciphertextBlob", &request.ciphertext_blob);
        v.blob_length(
            "ciphertextBlob",
            request.ciphertext_blob.as_deref(),
            1,
            MAX_CIPHERTEXT,
        );
        v.required("destinationKeyId", &request.destination_key_id);
        v.length(
            "destinationKeyId",
            request.destination_key_id.as_deref(),
            1,
            2048,
        );
        v.length("sourceKeyId", request.source_key_id.as_deref(), 1, 2048);
        v.one_of(
            "sourceEncryptionAlgorithm",
            request.source_encryption_algorithm.as_deref(),
            ENCRYPTION_ALGORITHMS,
        );
        v.one_of(
            "destinationEncryptionAlgorithm",
            request.destination_encryption_algorithm.as_deref(),
            ENCRYPTION_ALGORITHMS,
        );
        check_grant_tokens(&mut v, request.grant_tokens.as_deref());
        v.finish()?;
        check_token_formats(request.grant_tokens.as_deref())?;
        let source_context = request.source_encryption_context.unwrap_or_default();
        let destination_context = request.destination_encryption_context.unwrap_or_default();
        let source = self.open(
            "kms:ReEncryptFrom",
            request.ciphertext_blob.as_deref().unwrap_or_default(),
            request.source_key_id.as_deref(),
            &source_context,
            request.source_encryption_algorithm.as_deref(),
            None,
        )?;
        let destination_id = request.destination_key_id.as_deref().unwrap_or_default();
        let resolved = self
            .kms
            .resolve(self.ctx, destination_id, Aliases::Accepted)?;
        self.touches(&resolved.key);
        let facts = RequestFacts {
            encryption_context: Some(&destination_context),
            request_alias: resolved.via_alias.as_deref(),
            new_grant: None,
        };
        self.kms
            .authorize_key(self.ctx, "kms:ReEncryptTo", &resolved.key, &facts)?;
        Operation::ReEncrypt.check_state(&resolved.key.record)?;
        let destination = resolved.key;
        check_algorithm(
            &destination,
            request.destination_encryption_algorithm.as_deref(),
            "ReEncrypt",
        )?;
        refuse_dry_run(request.dry_run)?;
        let (ciphertext_blob, destination_material) = seal(
            &destination,
            &destination_context,
            source.plaintext.expose(),
        )?;
        Ok(ReEncryptResponse {
            ciphertext_blob,
            source_key_id: source.key.arn.clone(),
            key_id: destination.arn.clone(),
            source_encryption_algorithm: SYMMETRIC_DEFAULT,
            destination_encryption_algorithm: SYMMETRIC_DEFAULT,
            source_key_material_id: source.material_id,
            destination_key_material_id: destination_material,
        })
    }

    pub fn generate_data_key(
        &mut self,
        request: CryptoRequest,
        with_plaintext: bool,
    ) -> KmsResult<DataKeyResponse> {
        let mut v = Validator::new();
        v.required("keyId", &request.key_id);
        v.length("keyId", request.key_id.as_deref(), 1, 2048);
        v.range("numberOfBytes", request.number_of_bytes, 1, 1024);
        v.one_of(
            "keySpec",
            request.key_spec.as_deref(),
            &["AES_256", "AES_128"],
        );
        check_grant_tokens(&mut v, request.grant_tokens.as_deref());
        v.finish()?;
        check_token_formats(request.grant_tokens.as_deref())?;
        let length = match (request.key_spec.as_deref(), request.number_of_bytes) {
            (Some("AES_256"), None) => 32,
            (Some(_), None) => 16,
            (None, Some(bytes)) => usize::try_from(bytes).unwrap_or(0),
            _ => {
                return Err(KmsError::Validation(
                    "Please specify either number of bytes or key spec.".into(),
                ));
            }
        };
        let op = if with_plaintext {
            Operation::GenerateDataKey
        } else {
            Operation::GenerateDataKeyWithoutPlaintext
        };
        let context = request.encryption_context.unwrap_or_default();
        let key =
            self.crypto_target(op, request.key_id.as_deref().unwrap_or_default(), &context)?;
        refuse_dry_run(request.dry_run)?;
        let data_key = kura_crypto::random_secret(length)?;
        let (ciphertext_blob, key_material_id) = seal(&key, &context, data_key.expose())?;
        Ok(DataKeyResponse {
            ciphertext_blob,
            plaintext: with_plaintext.then_some(data_key),
            key_id: key.arn.clone(),
            key_material_id,
        })
    }

    pub fn generate_random(&mut self, request: CryptoRequest) -> KmsResult<RandomResponse> {
        let mut v = Validator::new();
        v.required("numberOfBytes", &request.number_of_bytes);
        v.range("numberOfBytes", request.number_of_bytes, 1, 1024);
        v.finish()?;
        if request.custom_key_store_id.is_some() {
            return Err(KmsError::UnsupportedOperation(
                "Custom key stores are not supported by kura.".into(),
            ));
        }
        self.kms
            .authorize_identity(self.ctx, Operation::GenerateRandom.action(), "*")?;
        let length = request
            .number_of_bytes
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        Ok(RandomResponse {
            plaintext: kura_crypto::random_secret(length)?,
        })
    }

    /// Resolves, authorizes (with the encryption context as condition keys) and
    /// state-checks the key of an encrypting operation.
    fn crypto_target(
        &mut self,
        op: Operation,
        key_id: &str,
        context: &Context,
    ) -> KmsResult<Arc<KeyEntry>> {
        let facts = RequestFacts {
            encryption_context: Some(context),
            ..RequestFacts::default()
        };
        self.target(op, key_id, Aliases::Accepted, facts)
    }

    /// Decrypts a ciphertext blob for Decrypt (`action` kms:Decrypt) or the source half of
    /// ReEncrypt (kms:ReEncryptFrom). The key comes from the blob; a `KeyId` in the request
    /// must name the same key.
    fn open(
        &mut self,
        action: &str,
        blob: &[u8],
        key_id: Option<&str>,
        context: &Context,
        algorithm: Option<&str>,
        dry_run: Option<bool>,
    ) -> KmsResult<Decrypted> {
        let header = CiphertextHeader::decode(blob).map_err(|_| KmsError::InvalidCiphertext)?;
        let named = key_id
            .map(|id| self.kms.resolve(self.ctx, id, Aliases::Accepted))
            .transpose()?;
        let key = self.kms.registry.key(&header.key_id).ok_or_else(|| {
            KmsError::AccessDenied(
                "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.".into(),
            )
        })?;
        if key.record.region != self.ctx.region.as_str() {
            return Err(KmsError::InvalidCiphertext);
        }
        if named
            .as_ref()
            .is_some_and(|n| n.key.record.id != key.record.id)
        {
            return Err(KmsError::IncorrectKey);
        }
        self.touches(&key);
        let facts = RequestFacts {
            encryption_context: Some(context),
            request_alias: named.as_ref().and_then(|n| n.via_alias.as_deref()),
            new_grant: None,
        };
        self.kms.authorize_key(self.ctx, action, &key, &facts)?;
        Operation::Decrypt.check_state(&key.record)?;
        check_algorithm(&key, algorithm, "Decrypt")?;
        refuse_dry_run(dry_run)?;
        let material = key
            .material(header.key_version)
            .ok_or(KmsError::InvalidCiphertext)?;
        let material_id = key
            .material_record(header.key_version)
            .map(|m| m.material_id.clone())
            .unwrap_or_default();
        let plaintext = material
            .decrypt(&header, blob, &EncryptionContext::new(context.clone()))
            .map_err(|_| KmsError::InvalidCiphertext)?;
        Ok(Decrypted {
            key,
            plaintext,
            material_id,
        })
    }
}

/// Encrypts under the key's current material; returns the blob and the material id used.
fn seal(key: &KeyEntry, context: &Context, plaintext: &[u8]) -> KmsResult<(Vec<u8>, String)> {
    let (version, material, record) = key.current()?;
    let blob = material.encrypt(
        key.record.id,
        version,
        &EncryptionContext::new(context.clone()),
        plaintext,
    )?;
    Ok((blob, record.material_id.clone()))
}

fn check_algorithm(key: &KeyEntry, algorithm: Option<&str>, operation: &str) -> KmsResult<()> {
    match algorithm {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(other) => Err(KmsError::InvalidKeyUsage(format!(
            "Algorithm {other} is incompatible with key spec SYMMETRIC_DEFAULT of {} for {operation}.",
            key.arn
        ))),
    }
}

fn refuse_dry_run(dry_run: Option<bool>) -> KmsResult<()> {
    if dry_run == Some(true) {
        Err(KmsError::DryRun)
    } else {
        Ok(())
    }
}
