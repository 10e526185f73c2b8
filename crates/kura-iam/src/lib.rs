//! kura's identities: accounts, users, access keys, and the identity policies attached to
//! them.
//!
//! Owns: the IAM records in the store, the secret access keys (wrapped by the root key at
//! rest), the in-memory credential table the edge authenticates every request against
//! ([`kura_edge::CredentialResolver`]), and the identity-based policies a principal
//! carries ([`Iam::identity_policies`]), which every service's authorization consults.
//!
//! Must not: decide any other service's authorization (services ask for policies and
//! evaluate them with `kura-policy`), or keep a secret in plaintext outside memory.

mod managed;
mod model;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use kura_crypto::{RootKey, SecretBytes};
use kura_edge::{Caller, Credential, CredentialResolver, IdentityType};
use kura_policy::{PolicyDocument, Principal, PrincipalKind, PrincipalRef};
use kura_store::{Store, StoreError};
use kura_types::{AccountId, Clock, Timestamp};

pub use managed::{ADMINISTRATOR_ACCESS, READ_ONLY_ACCESS};
use model::{ACCESS_KEYS, ACCOUNTS, AccessKeyRecord, AccountRecord, KeyStatus, USERS, UserRecord};

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the root key cannot unwrap the secret of access key {0}: was the data directory started with another root key?"
    )]
    Unwrap(String),
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
    #[error("crypto failure: {0}")]
    Crypto(#[from] kura_crypto::CryptoError),
}

type PolicySet = Arc<Vec<Arc<PolicyDocument>>>;

/// The in-memory view of the IAM records, rebuilt from the store at start and kept in step
/// with every write.
#[derive(Default)]
struct IamState {
    credentials: HashMap<String, Arc<Credential>>,
    /// Identity policies by principal ARN.
    policies: HashMap<String, PolicySet>,
    accounts: HashMap<String, AccountRecord>,
    users: HashMap<String, UserRecord>,
}

/// The IAM service.
pub struct Iam {
    store: Arc<Store>,
    root_key: Arc<RootKey>,
    clock: Arc<dyn Clock>,
    state: RwLock<IamState>,
}

impl Iam {
    /// Loads every IAM record from the store.
    pub fn open(
        store: Arc<Store>,
        root_key: Arc<RootKey>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, IamError> {
        let iam = Self {
            store,
            root_key,
            clock,
            state: RwLock::new(IamState::default()),
        };
        iam.reload()?;
        Ok(iam)
    }

    fn reload(&self) -> Result<(), IamError> {
        let (accounts, users, keys) = self.store.read(|r| {
            Ok::<_, IamError>((
                r.scan_all::<AccountRecord>(ACCOUNTS, "")?,
                r.scan_all::<UserRecord>(USERS, "")?,
                r.scan_all::<AccessKeyRecord>(ACCESS_KEYS, "")?,
            ))
        })?;
        let mut state = IamState::default();
        for (_, account) in accounts {
            state.accounts.insert(account.id.clone(), account);
        }
        for (_, user) in users {
            state
                .policies
                .insert(user.arn(), managed::policy_set(&user.attached_policies)?);
            state.users.insert(user.arn(), user);
        }
        for (_, key) in keys {
            if key.status != KeyStatus::Active {
                continue;
            }
            let Some(user) = state.users.get(&user_arn(&key.account, &key.user_name)) else {
                continue;
            };
            let credential = self.credential_for(user, &key)?;
            state
                .credentials
                .insert(key.access_key_id.clone(), Arc::new(credential));
        }
        *self.write_state() = state;
        Ok(())
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, IamState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, IamState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn credential_for(
        &self,
        user: &UserRecord,
        key: &AccessKeyRecord,
    ) -> Result<Credential, IamError> {
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&key.wrapped_secret)
            .map_err(|_| IamError::Unwrap(key.access_key_id.clone()))?;
        let secret = self
            .root_key
            .unwrap(&secret_label(&key.access_key_id), &wrapped)
            .map_err(|_| IamError::Unwrap(key.access_key_id.clone()))?;
        Ok(Credential {
            secret,
            session_token: None,
            expires: None,
            caller: Arc::new(Caller {
                principal: user.principal(),
                identity_type: IdentityType::IamUser,
                access_key_id: key.access_key_id.clone(),
                session: None,
            }),
        })
    }

    /// Creates the account if it does not exist yet.
    pub fn ensure_account(&self, account: &AccountId) -> Result<(), IamError> {
        if self.read_state().accounts.contains_key(account.as_str()) {
            return Ok(());
        }
        let record = AccountRecord {
            id: account.as_str().to_owned(),
            created: self.clock.now(),
        };
        self.store
            .write(|w| w.put(ACCOUNTS, &record.id, &record).map_err(IamError::from))?;
        self.write_state()
            .accounts
            .insert(record.id.clone(), record);
        Ok(())
    }

    pub fn account_exists(&self, account: &str) -> bool {
        self.read_state().accounts.contains_key(account)
    }

    /// Ids of every account this server knows.
    pub fn accounts(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.read_state().accounts.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Creates the user if missing and sets its attached managed policies to exactly
    /// `policy_arns` (the declarative form the configuration file uses).
    pub fn ensure_user(
        &self,
        account: &AccountId,
        name: &str,
        policy_arns: &[String],
    ) -> Result<(), IamError> {
        validate_user_name(name)?;
        let policies = managed::policy_set(policy_arns)?;
        let arn = user_arn(account.as_str(), name);
        let existing = self.read_state().users.get(&arn).cloned();
        if !self.account_exists(account.as_str()) {
            return Err(IamError::NoSuchAccount(account.to_string()));
        }
        let record = match existing {
            Some(mut user) => {
                if user.attached_policies == policy_arns {
                    return Ok(());
                }
                user.attached_policies = policy_arns.to_vec();
                user
            }
            None => UserRecord {
                account: account.as_str().to_owned(),
                name: name.to_owned(),
                path: "/".to_owned(),
                user_id: model::new_unique_id("AIDA")?,
                created: self.clock.now(),
                attached_policies: policy_arns.to_vec(),
            },
        };
        self.store.write(|w| {
            w.put(USERS, &record.store_key(), &record)
                .map_err(IamError::from)
        })?;
        let mut state = self.write_state();
        state.policies.insert(arn.clone(), policies);
        state.users.insert(arn, record);
        Ok(())
    }

    /// Installs an access key with a known secret for a user (configuration-declared keys).
    /// Replaces the secret if the key already exists for the same user.
    pub fn put_access_key(
        &self,
        account: &AccountId,
        user_name: &str,
        access_key_id: &str,
        secret: &SecretBytes,
    ) -> Result<(), IamError> {
        let arn = user_arn(account.as_str(), user_name);
        let user = self
            .read_state()
            .users
            .get(&arn)
            .cloned()
            .ok_or_else(|| IamError::NoSuchUser(arn.clone()))?;
        if let Some(existing) = self.read_state().credentials.get(access_key_id) {
            if existing.caller.principal.arn != arn {
                return Err(IamError::AccessKeyInUse(access_key_id.to_owned()));
            }
            if existing.secret == *secret {
                return Ok(());
            }
        }
        let wrapped = self
            .root_key
            .wrap(&secret_label(access_key_id), secret.expose())?;
        let record = AccessKeyRecord {
            access_key_id: access_key_id.to_owned(),
            account: account.as_str().to_owned(),
            user_name: user_name.to_owned(),
            wrapped_secret: base64::engine::general_purpose::STANDARD.encode(wrapped),
            status: KeyStatus::Active,
            created: self.clock.now(),
        };
        self.store.write(|w| {
            w.put(ACCESS_KEYS, access_key_id, &record)
                .map_err(IamError::from)
        })?;
        let credential = self.credential_for(&user, &record)?;
        self.write_state()
            .credentials
            .insert(access_key_id.to_owned(), Arc::new(credential));
        Ok(())
    }

    /// Creates a new random access key for a user and returns its id and secret.
    pub fn create_access_key(
        &self,
        account: &AccountId,
        user_name: &str,
    ) -> Result<(String, SecretBytes), IamError> {
        let access_key_id = model::new_unique_id("AKIA")?;
        let secret = model::new_secret_access_key()?;
        self.put_access_key(account, user_name, &access_key_id, &secret)?;
        Ok((access_key_id, secret))
    }

    /// Active access key ids of a user.
    pub fn access_keys_of(&self, account: &AccountId, user_name: &str) -> Vec<String> {
        let arn = user_arn(account.as_str(), user_name);
        let mut ids: Vec<String> = self
            .read_state()
            .credentials
            .iter()
            .filter(|(_, c)| c.caller.principal.arn == arn)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The identity-based policies in force for `principal` (empty for unknown ones).
    pub fn identity_policies(&self, principal: &Principal) -> PolicySet {
        let key = match &principal.kind {
            PrincipalKind::AssumedRole { role_arn, .. } => role_arn.as_str(),
            _ => principal.arn.as_str(),
        };
        self.read_state()
            .policies
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether a principal named in a policy exists on this server, as AWS requires of
    /// the principals of key and trust policies: a known account, user or role. Sessions
    /// and federated users are accepted as AWS accepts them.
    pub fn knows(&self, reference: &PrincipalRef) -> bool {
        let state = self.read_state();
        match reference {
            PrincipalRef::Everyone
            | PrincipalRef::AssumedRoleSession { .. }
            | PrincipalRef::FederatedUser { .. } => true,
            PrincipalRef::Account { account } => state.accounts.contains_key(account),
            PrincipalRef::User { arn } => state.users.contains_key(arn),
            PrincipalRef::Role { .. } => false,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

impl CredentialResolver for Iam {
    fn resolve(&self, access_key_id: &str) -> Option<Arc<Credential>> {
        self.read_state().credentials.get(access_key_id).cloned()
    }
}

fn user_arn(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:user/{name}")
}

fn secret_label(access_key_id: &str) -> Vec<u8> {
    format!("kura/iam/access-key/{access_key_id}").into_bytes()
}

/// IAM user names: 1-64 of `[\w+=,.@-]`.
fn validate_user_name(name: &str) -> Result<(), IamError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(IamError::InvalidName(format!(
            "'{name}': user names are 1-64 characters of letters, digits and _+=,.@-"
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kura_types::SystemClock;

    fn iam() -> Iam {
        let store = Arc::new(Store::in_memory().unwrap());
        let root = Arc::new(RootKey::from_secret(&SecretBytes::zeroed(32)).unwrap());
        Iam::open(store, root, Arc::new(SystemClock)).unwrap()
    }

    #[test]
    fn users_and_keys_resolve_to_callers() {
        let iam = iam();
        let account = AccountId::parse("111122223333").unwrap();
        iam.ensure_account(&account).unwrap();
        iam.ensure_user(&account, "alice", &[ADMINISTRATOR_ACCESS.to_owned()])
            .unwrap();
        let (akid, secret) = iam.create_access_key(&account, "alice").unwrap();
        let credential = iam.resolve(&akid).unwrap();
        assert_eq!(credential.secret, secret);
        assert_eq!(
            credential.caller.principal.arn,
            "arn:aws:iam::111122223333:user/alice"
        );
        assert_eq!(iam.identity_policies(&credential.caller.principal).len(), 1);
        assert!(iam.resolve("AKIANOTAKEY").is_none());
        let account = |id: &str| PrincipalRef::Account {
            account: id.to_owned(),
        };
        let user = |arn: &str| PrincipalRef::User {
            arn: arn.to_owned(),
        };
        assert!(iam.knows(&account("111122223333")));
        assert!(!iam.knows(&account("999999999999")));
        assert!(iam.knows(&user("arn:aws:iam::111122223333:user/alice")));
        assert!(!iam.knows(&user("arn:aws:iam::111122223333:user/bob")));
    }

    #[test]
    fn records_survive_reload() {
        let store = Arc::new(Store::in_memory().unwrap());
        let root = Arc::new(RootKey::from_secret(&SecretBytes::zeroed(32)).unwrap());
        let account = AccountId::parse("111122223333").unwrap();
        let akid = {
            let iam = Iam::open(store.clone(), root.clone(), Arc::new(SystemClock)).unwrap();
            iam.ensure_account(&account).unwrap();
            iam.ensure_user(&account, "alice", &[]).unwrap();
            iam.create_access_key(&account, "alice").unwrap().0
        };
        let iam = Iam::open(store, root, Arc::new(SystemClock)).unwrap();
        assert!(iam.resolve(&akid).is_some());
    }

    #[test]
    fn refuses_bad_names_and_unknown_policies() {
        let iam = iam();
        let account = AccountId::parse("111122223333").unwrap();
        iam.ensure_account(&account).unwrap();
        assert!(iam.ensure_user(&account, "bad name", &[]).is_err());
        assert!(
            iam.ensure_user(&account, "x", &["arn:aws:iam::aws:policy/Nope".into()])
                .is_err()
        );
    }
}
