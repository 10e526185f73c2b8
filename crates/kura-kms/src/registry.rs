//! The in-memory registry of keys and aliases, and the only code that writes them.
//!
//! Every request reads keys from memory (the crypto path must not touch the disk); every
//! change goes through [`Registry::apply`], which writes the change to the store in one
//! transaction and only then makes it visible. Writers are serialized by a mutex, so a
//! change is computed from, and applied to, the state it was computed from.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine as _;
use kura_crypto::{BackingKey, RootKey};
use kura_policy::{PolicyDocument, PolicyKind};
use kura_store::Store;
use uuid::Uuid;

use crate::error::{KmsError, KmsResult};
use crate::model::{
    ALIASES, AliasRecord, GRANTS, GrantRecord, KEYS, KeyRecord, MaterialRecord, alias_store_key,
};

/// A key as the service uses it: its record, its parsed policy and its unwrapped material.
pub(crate) struct KeyEntry {
    pub record: KeyRecord,
    pub arn: String,
    pub policy: Arc<PolicyDocument>,
    /// Unwrapped material by version (index 0 = version 1).
    materials: Vec<Arc<BackingKey>>,
}

impl KeyEntry {
    /// The current (newest) material: its version, key and record.
    pub fn current(&self) -> KmsResult<(u32, &BackingKey, &MaterialRecord)> {
        let record = self
            .record
            .current_material()
            .ok_or_else(|| KmsError::Internal(format!("key {} has no material", self.record.id)))?;
        let key = self.material(record.version).ok_or_else(|| {
            KmsError::Internal(format!(
                "key {} lacks material {}",
                self.record.id, record.version
            ))
        })?;
        Ok((record.version, key, record))
    }

    pub fn material(&self, version: u32) -> Option<&BackingKey> {
        let index = usize::try_from(version.checked_sub(1)?).ok()?;
        self.materials.get(index).map(Arc::as_ref)
    }

    pub fn material_record(&self, version: u32) -> Option<&MaterialRecord> {
        self.record.materials.iter().find(|m| m.version == version)
    }
}

#[derive(Default)]
struct RegistryState {
    keys: HashMap<Uuid, Arc<KeyEntry>>,
    /// (account, key id), for listing an account's keys in a stable order.
    account_keys: BTreeSet<(String, Uuid)>,
    /// (account, alias name) → alias.
    aliases: BTreeMap<(String, String), AliasRecord>,
    /// Grants of each key, by key id then grant id.
    grants: HashMap<Uuid, BTreeMap<String, GrantRecord>>,
}

/// A set of changes to apply atomically.
#[derive(Default)]
pub(crate) struct Changes {
    put_keys: Vec<KeyRecord>,
    delete_keys: Vec<Uuid>,
    put_aliases: Vec<AliasRecord>,
    delete_aliases: Vec<(String, String)>,
    put_grants: Vec<GrantRecord>,
    delete_grants: Vec<GrantRecord>,
}

impl Changes {
    pub fn put_key(&mut self, record: KeyRecord) -> &mut Self {
        self.put_keys.push(record);
        self
    }

    pub fn delete_key(&mut self, id: Uuid) -> &mut Self {
        self.delete_keys.push(id);
        self
    }

    pub fn put_alias(&mut self, alias: AliasRecord) -> &mut Self {
        self.put_aliases.push(alias);
        self
    }

    pub fn delete_alias(&mut self, account: &str, name: &str) -> &mut Self {
        self.delete_aliases
            .push((account.to_owned(), name.to_owned()));
        self
    }

    pub fn put_grant(&mut self, grant: GrantRecord) -> &mut Self {
        self.put_grants.push(grant);
        self
    }

    pub fn delete_grant(&mut self, grant: GrantRecord) -> &mut Self {
        self.delete_grants.push(grant);
        self
    }
}

pub(crate) struct Registry {
    store: Arc<Store>,
    root_key: Arc<RootKey>,
    state: RwLock<RegistryState>,
    writer: Mutex<()>,
}

pub(crate) fn material_label(key_id: Uuid, version: u32) -> Vec<u8> {
    format!("kura/kms/backing-key/{key_id}/{version}").into_bytes()
}

impl Registry {
    /// Loads every key and alias from the store, unwrapping all key material.
    pub fn load(store: Arc<Store>, root_key: Arc<RootKey>) -> KmsResult<Self> {
        let (keys, aliases, grants) = store.read(|r| {
            Ok::<_, KmsError>((
                r.scan_all::<KeyRecord>(KEYS, "")?,
                r.scan_all::<AliasRecord>(ALIASES, "")?,
                r.scan_all::<GrantRecord>(GRANTS, "")?,
            ))
        })?;
        let registry = Self {
            store,
            root_key,
            state: RwLock::new(RegistryState::default()),
            writer: Mutex::new(()),
        };
        {
            let mut state = registry.write_state();
            for (_, record) in keys {
                let entry = registry.build_entry(record, None)?;
                state
                    .account_keys
                    .insert((entry.record.account.clone(), entry.record.id));
                state.keys.insert(entry.record.id, Arc::new(entry));
            }
            for (_, alias) in aliases {
                state
                    .aliases
                    .insert((alias.account.clone(), alias.name.clone()), alias);
            }
            for (_, grant) in grants {
                state
                    .grants
                    .entry(grant.key_id)
                    .or_default()
                    .insert(grant.grant_id.clone(), grant);
            }
        }
        Ok(registry)
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, RegistryState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, RegistryState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Wraps new material for storage under the root key.
    pub fn wrap_material(
        &self,
        key_id: Uuid,
        version: u32,
        material: &BackingKey,
    ) -> KmsResult<String> {
        let wrapped = self
            .root_key
            .wrap(&material_label(key_id, version), material.secret().expose())?;
        Ok(base64::engine::general_purpose::STANDARD.encode(wrapped))
    }

    fn build_entry(&self, record: KeyRecord, previous: Option<&KeyEntry>) -> KmsResult<KeyEntry> {
        let policy = PolicyDocument::parse(&record.policy, PolicyKind::Resource).map_err(|e| {
            KmsError::Internal(format!(
                "stored policy of key {} does not parse: {e}",
                record.id
            ))
        })?;
        let mut materials = Vec::with_capacity(record.materials.len());
        for (index, material) in record.materials.iter().enumerate() {
            let expected = u32::try_from(index + 1).unwrap_or(u32::MAX);
            if material.version != expected {
                return Err(KmsError::Internal(format!(
                    "key {} material versions are not consecutive",
                    record.id
                )));
            }
            if let Some(existing) = previous.and_then(|p| p.materials.get(index)) {
                materials.push(existing.clone());
                continue;
            }
            materials.push(Arc::new(self.unwrap_material(record.id, material)?));
        }
        Ok(KeyEntry {
            arn: record.arn(),
            policy: Arc::new(policy),
            record,
            materials,
        })
    }

    fn unwrap_material(&self, key_id: Uuid, material: &MaterialRecord) -> KmsResult<BackingKey> {
        let failed = || {
            KmsError::Internal(format!(
                "cannot unwrap material {} of key {key_id}: wrong root key or damaged record",
                material.version
            ))
        };
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&material.wrapped)
            .map_err(|_| failed())?;
        let secret = self
            .root_key
            .unwrap(&material_label(key_id, material.version), &wrapped)
            .map_err(|_| failed())?;
        BackingKey::from_secret(secret).map_err(|_| failed())
    }

    pub fn key(&self, id: &Uuid) -> Option<Arc<KeyEntry>> {
        self.read_state().keys.get(id).cloned()
    }

    /// Keys of `account` in id order, strictly after `after`, at most `limit`.
    pub fn keys_of(&self, account: &str, after: Option<Uuid>, limit: usize) -> Vec<Arc<KeyEntry>> {
        let state = self.read_state();
        let start = (account.to_owned(), after.unwrap_or(Uuid::nil()));
        state
            .account_keys
            .range(start..)
            .take_while(|(a, _)| a == account)
            .filter(|(_, id)| Some(*id) != after)
            .take(limit)
            .filter_map(|(_, id)| state.keys.get(id).cloned())
            .collect()
    }

    /// Every key of every account (for maintenance passes).
    pub fn all_keys(&self) -> Vec<Arc<KeyEntry>> {
        self.read_state().keys.values().cloned().collect()
    }

    pub fn alias(&self, account: &str, name: &str) -> Option<AliasRecord> {
        self.read_state()
            .aliases
            .get(&(account.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Aliases of `account` in name order.
    pub fn aliases_of(&self, account: &str) -> Vec<AliasRecord> {
        self.read_state()
            .aliases
            .range((account.to_owned(), String::new())..)
            .take_while(|((a, _), _)| a == account)
            .map(|(_, alias)| alias.clone())
            .collect()
    }

    /// Names of the aliases that point at `key`.
    pub fn alias_names_of_key(&self, account: &str, key: Uuid) -> Vec<String> {
        self.aliases_of(account)
            .into_iter()
            .filter(|a| a.target == key)
            .map(|a| a.name)
            .collect()
    }

    /// The grants of `key`, in grant-id order.
    pub fn grants_of(&self, key: &Uuid) -> Vec<GrantRecord> {
        self.read_state()
            .grants
            .get(key)
            .map(|grants| grants.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every grant of every key (ListRetirableGrants looks across keys).
    pub fn all_grants(&self) -> Vec<GrantRecord> {
        self.read_state()
            .grants
            .values()
            .flat_map(|grants| grants.values().cloned())
            .collect()
    }

    /// Serializes a read-modify-write: `body` sees the current state (through `self`) and
    /// returns the changes to make; they are persisted in one transaction, then published.
    pub fn apply<T>(&self, body: impl FnOnce(&Self, &mut Changes) -> KmsResult<T>) -> KmsResult<T> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut changes = Changes::default();
        let value = body(self, &mut changes)?;

        // Build the new entries first: if any cannot be built, nothing is written.
        let mut entries = Vec::with_capacity(changes.put_keys.len());
        for record in &changes.put_keys {
            let previous = self.key(&record.id);
            entries.push(Arc::new(
                self.build_entry(record.clone(), previous.as_deref())?,
            ));
        }

        self.store.write(|w| {
            for record in &changes.put_keys {
                w.put(KEYS, &record.id.to_string(), record)?;
            }
            for id in &changes.delete_keys {
                w.delete(KEYS, &id.to_string())?;
            }
            for alias in &changes.put_aliases {
                w.put(ALIASES, &alias.store_key(), alias)?;
            }
            for (account, name) in &changes.delete_aliases {
                w.delete(ALIASES, &alias_store_key(account, name))?;
            }
            for grant in &changes.put_grants {
                w.put(GRANTS, &grant.store_key(), grant)?;
            }
            for grant in &changes.delete_grants {
                w.delete(GRANTS, &grant.store_key())?;
            }
            Ok::<_, KmsError>(())
        })?;

        let mut state = self.write_state();
        for entry in entries {
            state
                .account_keys
                .insert((entry.record.account.clone(), entry.record.id));
            state.keys.insert(entry.record.id, entry);
        }
        for id in &changes.delete_keys {
            if let Some(entry) = state.keys.remove(id) {
                state
                    .account_keys
                    .remove(&(entry.record.account.clone(), *id));
            }
        }
        for alias in changes.put_aliases {
            state
                .aliases
                .insert((alias.account.clone(), alias.name.clone()), alias);
        }
        for key in changes.delete_aliases {
            state.aliases.remove(&key);
        }
        for grant in changes.put_grants {
            state
                .grants
                .entry(grant.key_id)
                .or_default()
                .insert(grant.grant_id.clone(), grant);
        }
        for grant in changes.delete_grants {
            if let Some(grants) = state.grants.get_mut(&grant.key_id) {
                grants.remove(&grant.grant_id);
            }
        }
        for id in &changes.delete_keys {
            state.grants.remove(id);
        }
        Ok(value)
    }
}
