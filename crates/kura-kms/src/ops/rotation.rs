//! Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
//! RotateKeyOnDemand, ListKeyRotations.
//!
//! Rotating adds a material version and makes it current; every older version stays, so
//! every ciphertext ever produced under the key still decrypts (the blob names its
//! version). Automatic rotations are made by [`crate::Kms::run_maintenance`].

use kura_crypto::BackingKey;
use kura_types::Timestamp;
use serde::Serialize;

use super::keys::KeyIdResponse;
use super::{Call, Empty, check_paging, paginate};
use crate::error::{KmsError, KmsResult};
use crate::model::{KeyRecord, KeyState, MaterialRecord, RotationType};
use crate::operation::Operation;
use crate::registry::Registry;
use crate::resolve::Aliases;
use crate::validate::Validator;
use crate::wire::{KeyRequest, Page};
use crate::{KeyEventKind, Kms};

const DEFAULT_ROTATION_DAYS: i64 = 365;
/// On-demand rotations allowed per key over its lifetime.
pub(crate) const ON_DEMAND_LIMIT: u32 = 25;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RotationStatus {
    key_rotation_enabled: bool,
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_period_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_rotation_date: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Rotations {
    rotations: Vec<RotationEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RotationEntry {
    key_id: String,
    key_material_id: String,
    key_material_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_date: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_type: Option<&'static str>,
}

impl Call<'_> {
    pub fn enable_key_rotation(&mut self, request: KeyRequest) -> KmsResult<Empty> {
        let mut v = Validator::new();
        v.range(
            "rotationPeriodInDays",
            request.rotation_period_in_days,
            90,
            2560,
        );
        let op = Operation::EnableKeyRotation;
        let key = self.required_target(op, &request.key_id, Aliases::Refused, v)?;
        let period = request
            .rotation_period_in_days
            .unwrap_or(DEFAULT_ROTATION_DAYS);
        let now = self.ctx.time;
        self.update_key(&key, op, |record| {
            // First rotation one period after enabling; a changed period counts from the
            // last rotation (or creation) instead.
            let since = if record.rotation.enabled {
                record
                    .current_material()
                    .map_or(record.created, |m| m.created)
            } else {
                now
            };
            record.rotation.enabled = true;
            record.rotation.period_days = u32::try_from(period).ok();
            record.rotation.next_rotation = Some(since.plus_days(period).max(now));
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub fn disable_key_rotation(&mut self, request: KeyRequest) -> KmsResult<Empty> {
        let op = Operation::DisableKeyRotation;
        let key = self.required_target(op, &request.key_id, Aliases::Refused, Validator::new())?;
        self.update_key(&key, op, |record| {
            record.rotation.enabled = false;
            record.rotation.period_days = None;
            record.rotation.next_rotation = None;
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub fn get_key_rotation_status(&mut self, request: KeyRequest) -> KmsResult<RotationStatus> {
        let key = self.required_target(
            Operation::GetKeyRotationStatus,
            &request.key_id,
            Aliases::Refused,
            Validator::new(),
        )?;
        let record = &key.record;
        // AWS reports rotation as off while a key is pending deletion; the setting comes
        // back if the deletion is cancelled.
        let enabled = record.rotation.enabled && record.state != KeyState::PendingDeletion;
        Ok(RotationStatus {
            key_rotation_enabled: enabled,
            key_id: key.arn.clone(),
            rotation_period_in_days: record.rotation.period_days.filter(|_| enabled),
            next_rotation_date: record
                .rotation
                .next_rotation
                .filter(|_| enabled)
                .map(Timestamp::epoch_seconds),
        })
    }

    pub fn rotate_key_on_demand(&mut self, request: KeyRequest) -> KmsResult<KeyIdResponse> {
        let op = Operation::RotateKeyOnDemand;
        let key = self.required_target(op, &request.key_id, Aliases::Refused, Validator::new())?;
        let now = self.ctx.time;
        let registry = &self.kms.registry;
        self.update_key(&key, op, |record| {
            if record.rotation.on_demand_count >= ON_DEMAND_LIMIT {
                return Err(KmsError::LimitExceeded(format!(
                    "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {}",
                    record.arn()
                )));
            }
            record.rotation.on_demand_count += 1;
            add_material(registry, record, RotationType::OnDemand, now)
        })?;
        self.kms
            .publish(KeyEventKind::Rotated, &key.record.account, key.record.id);
        Ok(KeyIdResponse {
            key_id: key.record.id.to_string(),
        })
    }

    pub fn list_key_rotations(&mut self, request: KeyRequest) -> KmsResult<Page<Rotations>> {
        let mut v = Validator::new();
        check_paging(&mut v, request.limit, request.marker.as_deref());
        v.one_of(
            "includeKeyMaterial",
            request.include_key_material.as_deref(),
            &["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"],
        );
        let key = self.required_target(
            Operation::ListKeyRotations,
            &request.key_id,
            Aliases::Refused,
            v,
        )?;
        let include_original = request.include_key_material.as_deref() == Some("ALL_KEY_MATERIAL");
        let current = key.record.current_material().map(|m| m.version);
        let materials: Vec<MaterialRecord> = key
            .record
            .materials
            .iter()
            .filter(|m| include_original || m.rotation.is_some())
            .cloned()
            .collect();
        let key_id = key.record.id.to_string();
        paginate(
            materials,
            |m| format!("{:010}", m.version),
            request.limit,
            request.marker.as_deref(),
            |materials| Rotations {
                rotations: materials
                    .iter()
                    .map(|m| RotationEntry {
                        key_id: key_id.clone(),
                        key_material_id: m.material_id.clone(),
                        key_material_state: if Some(m.version) == current {
                            "CURRENT"
                        } else {
                            "NON_CURRENT"
                        },
                        rotation_date: m.rotation.map(|_| m.created.epoch_seconds()),
                        rotation_type: m.rotation.map(RotationType::as_str),
                    })
                    .collect(),
            },
        )
    }
}

/// Appends a new, current material version to `record`.
pub(crate) fn add_material(
    registry: &Registry,
    record: &mut KeyRecord,
    rotation: RotationType,
    now: Timestamp,
) -> KmsResult<()> {
    let version = record
        .current_material()
        .map_or(1, |m| m.version.saturating_add(1));
    let material = BackingKey::generate()?;
    record.materials.push(MaterialRecord {
        version,
        material_id: kura_crypto::random_hex(32)?,
        wrapped: registry.wrap_material(record.id, version, &material)?,
        created: now,
        rotation: Some(rotation),
    });
    if let Some(period) = record
        .rotation
        .period_days
        .filter(|_| record.rotation.enabled)
    {
        record.rotation.next_rotation = Some(now.plus_days(i64::from(period)));
    }
    Ok(())
}

impl Kms {
    /// Rotates `key_id` automatically if it is enabled and due; returns whether it did.
    pub(crate) fn rotate_if_due(&self, key_id: uuid::Uuid, now: Timestamp) -> KmsResult<bool> {
        let rotated = self.registry.apply(|registry, changes| {
            let Some(key) = registry.key(&key_id) else {
                return Ok(false);
            };
            let record = &key.record;
            let due = record.rotation.enabled
                && record.state == KeyState::Enabled
                && record
                    .rotation
                    .next_rotation
                    .is_some_and(|next| next <= now);
            if !due {
                return Ok(false);
            }
            let mut record = record.clone();
            add_material(registry, &mut record, RotationType::Automatic, now)?;
            changes.put_key(record);
            Ok(true)
        })?;
        if let Some(key) = self.registry.key(&key_id).filter(|_| rotated) {
            tracing::info!(key = %key.arn, "rotated key material automatically");
            self.publish(KeyEventKind::Rotated, &key.record.account, key_id);
        }
        Ok(rotated)
    }
}
