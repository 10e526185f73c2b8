//! kura's key management service: an AWS KMS-compatible API for symmetric keys.
//!
//! Owns: KMS keys and their material versions, aliases, key policies, grants, tags,
//! rotation and scheduled deletion; the KMS JSON 1.1 operations (`TrentService.*`);
//! authorization of every KMS request (key policy, identity policies, grants); and the
//! key-state events other services subscribe to ([`Kms::subscribe`]).
//!
//! Must not: touch databases or volumes (they are KMS *clients*, calling [`Kms::invoke`]
//! like anyone else), hand plaintext key material to anything but the crypto library, or
//! write to the store outside [`registry::Registry::apply`].
//!
//! ```text
//! request ─► operation::lookup ─► validate ─► resolve key ─► authorize ─► key state ─► act
//! ```

mod authz;
mod error;
mod maintenance;
mod managed;
mod model;
mod operation;
mod ops;
mod registry;
mod resolve;
mod validate;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use kura_crypto::BackingKey;
use kura_edge::{ApiError, AuditDetails, AuditResource, JsonService, RequestContext};
use kura_iam::Iam;
use kura_store::Store;
use kura_types::{Clock, Region, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

pub use error::{KmsError, KmsResult};
pub use maintenance::MaintenanceReport;
pub use model::KeyState;
pub use operation::Operation;

use model::{KeyManager, KeyRecord, MaterialRecord, RotationSettings};
use registry::{KeyEntry, Registry};

/// What happened to a key, for services that depend on key state (the database service
/// locks a database when its key stops being usable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyEventKind {
    Created,
    Enabled,
    Disabled,
    DeletionScheduled,
    DeletionCancelled,
    Deleted,
    Rotated,
    PolicyChanged,
    /// A grant on the key was retired or revoked.
    GrantRemoved,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEvent {
    pub account: String,
    pub key_id: uuid::Uuid,
    pub key_arn: String,
    pub kind: KeyEventKind,
}

/// The KMS service.
pub struct Kms {
    region: Region,
    clock: Arc<dyn Clock>,
    iam: Arc<Iam>,
    registry: Registry,
    events: broadcast::Sender<KeyEvent>,
}

impl Kms {
    /// Loads the KMS state from the store.
    pub fn open(
        store: Arc<Store>,
        root_key: Arc<kura_crypto::RootKey>,
        iam: Arc<Iam>,
        clock: Arc<dyn Clock>,
        region: Region,
    ) -> KmsResult<Self> {
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            region,
            clock,
            iam,
            registry: Registry::load(store, root_key)?,
            events,
        })
    }

    /// Key-state events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<KeyEvent> {
        self.events.subscribe()
    }

    fn publish(&self, kind: KeyEventKind, account: &str, key_id: uuid::Uuid) {
        let event = KeyEvent {
            account: account.to_owned(),
            key_id,
            key_arn: format!("arn:aws:kms:{}:{account}:key/{key_id}", self.region),
            kind,
        };
        // No subscriber is fine: nobody depends on this key yet.
        let _ = self.events.send(event);
    }

    /// Runs one operation: the entry point for the edge and for in-process callers such as
    /// the database service (which passes a context made with
    /// [`RequestContext::on_behalf_via`]). `audit` receives what the audit record must say.
    pub fn invoke(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
        audit: &mut AuditDetails,
    ) -> KmsResult<Vec<u8>> {
        let op = operation::lookup(operation)?;
        audit.read_only = Some(op.read_only());
        audit.request_parameters = ops::audit_parameters(op, body);
        ops::dispatch(self, ctx, op, body, audit)
    }

    /// A fresh customer managed key record with one material version.
    fn new_key_record(&self, account: &str, region: &str, now: Timestamp) -> KmsResult<KeyRecord> {
        let id = uuid::Uuid::new_v4();
        let material = BackingKey::generate()?;
        let first = MaterialRecord {
            version: 1,
            material_id: kura_crypto::random_hex(32)?,
            wrapped: self.registry.wrap_material(id, 1, &material)?,
            created: now,
            rotation: None,
        };
        Ok(KeyRecord {
            id,
            account: account.to_owned(),
            region: region.to_owned(),
            description: String::new(),
            created: now,
            state: KeyState::Enabled,
            deletion_date: None,
            pending_window_days: None,
            manager: KeyManager::Customer,
            policy: default_key_policy(account),
            rotation: RotationSettings::default(),
            materials: vec![first],
            tags: Default::default(),
        })
    }
}

/// The key policy AWS attaches when CreateKey is called without one: the account may use
/// IAM policies to grant access (`key-default-1`).
fn default_key_policy(account: &str) -> String {
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    });
    serde_json::to_string_pretty(&policy).unwrap_or_default()
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> KmsResult<T> {
    // Every KMS request is a JSON object; serde would also accept an array for a struct.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(KmsError::Serialization(
            "The request body must be a JSON object.".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| KmsError::Serialization(serialization_message(&e)))
}

/// A deserializer error in terms a client can act on, without echoing request data.
fn serialization_message(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof => "The request body is not valid JSON.".to_owned(),
        Category::Data => format!("A request member has the wrong type or value: {error}"),
        Category::Io => "The request body could not be read.".to_owned(),
    }
}

fn respond<T: Serialize>(response: &T) -> KmsResult<Vec<u8>> {
    serde_json::to_vec(response)
        .map_err(|e| KmsError::Internal(format!("encoding a response: {e}")))
}

/// The audit record's resource entry for a key.
fn key_resource(key: &KeyEntry) -> AuditResource {
    AuditResource {
        account_id: key.record.account.clone(),
        resource_type: "AWS::KMS::Key".to_owned(),
        arn: key.arn.clone(),
    }
}

#[async_trait]
impl JsonService for Kms {
    fn target_prefix(&self) -> &'static str {
        "TrentService"
    }

    fn signing_name(&self) -> &'static str {
        "kms"
    }

    fn event_source(&self) -> &'static str {
        "kms.amazonaws.com"
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        operation: &str,
        body: &[u8],
        audit: &mut AuditDetails,
    ) -> Result<Vec<u8>, ApiError> {
        self.invoke(ctx, operation, body, audit)
            .map_err(ApiError::from)
    }
}
