//! kura's identities: accounts, users, access keys, roles, sessions, managed and inline
//! policies, and the IAM and STS APIs that manage them.
//!
//! Owns: the IAM records in the store, the secret access keys and session credentials
//! (wrapped by the root key at rest), the in-memory credential table the edge
//! authenticates every request against ([`kura_edge::CredentialResolver`]), the
//! identity-based policies a principal carries ([`Iam::identity_policies`]), which every
//! service's authorization consults, and the AWS Query APIs `iam` ([`IamService`]) and
//! `sts` ([`StsService`]).
//!
//! Must not: decide any other service's authorization (services ask for policies and
//! evaluate them with `kura-policy`), or keep a secret in plaintext outside memory.
//!
//! Every change goes through [`Iam::apply`]: it is computed on a copy of the state,
//! written to the store in one transaction, and only then published.

mod authz;
mod error;
mod iam_api;
mod managed;
mod model;
mod names;
mod query;
mod state;
mod sts_api;

use std::sync::{Arc, Mutex, RwLock};

use kura_crypto::{RootKey, SecretBytes};
use kura_edge::{Credential, CredentialResolver};
use kura_policy::{PolicyDocument, Principal, PrincipalKind, PrincipalRef};
use kura_store::Store;
use kura_types::{AccountId, Clock, Timestamp};

pub use authz::{Denial, authorize_identity, base_context};
pub use error::IamError;
pub use iam_api::IamService;
pub use managed::{ADMINISTRATOR_ACCESS, READ_ONLY_ACCESS};
pub use sts_api::StsService;

use model::{
    ACCESS_KEYS, ACCOUNTS, AccessKeyRecord, AccountRecord, KeyStatus, POLICIES, PolicyRecord,
    ROLES, RoleRecord, SESSIONS, SessionRecord, USERS, UserRecord,
};
use state::{Draft, IamState, PolicyEntry, RoleEntry, name_key};

type PolicySet = Arc<Vec<Arc<PolicyDocument>>>;

/// How long an expired session is remembered, so that its callers are told
/// `ExpiredToken` rather than that the key is unknown.
const SESSION_RETENTION_MILLIS: i64 = 12 * 3600 * 1000;

/// The IAM service.
pub struct Iam {
    store: Arc<Store>,
    root_key: Arc<RootKey>,
    clock: Arc<dyn Clock>,
    state: RwLock<Arc<IamState>>,
    /// Serializes changes: one draft at a time.
    writer: Mutex<()>,
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
            state: RwLock::new(Arc::new(IamState::default())),
            writer: Mutex::new(()),
        };
        iam.reload()?;
        Ok(iam)
    }

    fn reload(&self) -> Result<(), IamError> {
        let now = self.clock.now();
        let (accounts, users, keys, roles, policies, sessions) = self.store.read(|r| {
            Ok::<_, IamError>((
                r.scan_all::<AccountRecord>(ACCOUNTS, "")?,
                r.scan_all::<UserRecord>(USERS, "")?,
                r.scan_all::<AccessKeyRecord>(ACCESS_KEYS, "")?,
                r.scan_all::<RoleRecord>(ROLES, "")?,
                r.scan_all::<PolicyRecord>(POLICIES, "")?,
                r.scan_all::<SessionRecord>(SESSIONS, "")?,
            ))
        })?;
        let mut state = IamState::default();
        for (_, account) in accounts {
            state.accounts.insert(account.id.clone(), account);
        }
        for (_, user) in users {
            state
                .users
                .insert(name_key(&user.account, &user.name), user);
        }
        for (_, policy) in policies {
            let document = policy
                .default_document()
                .map(|v| v.document.as_str())
                .unwrap_or_default();
            let document = authz::parse_identity_policy(document).map_err(|e| {
                IamError::Internal(format!(
                    "stored policy {} does not parse: {e}",
                    policy.arn()
                ))
            })?;
            state.policies.insert(
                name_key(&policy.account, &policy.name),
                PolicyEntry {
                    record: policy,
                    document: Arc::new(document),
                },
            );
        }
        for (_, role) in roles {
            let trust = authz::parse_trust_policy(&role.trust_policy).map_err(|e| {
                IamError::Internal(format!(
                    "stored trust policy of {} does not parse: {e}",
                    role.arn()
                ))
            })?;
            state.roles.insert(
                name_key(&role.account, &role.name),
                RoleEntry {
                    record: role,
                    trust: Arc::new(trust),
                },
            );
        }
        for (_, key) in keys {
            state.access_keys.insert(key.access_key_id.clone(), key);
        }
        let cutoff = now.plus_millis(-SESSION_RETENTION_MILLIS);
        let mut expired = Vec::new();
        for (id, session) in sessions {
            if session.expires < cutoff {
                expired.push(id);
            } else {
                state.sessions.insert(id, session);
            }
        }
        state.rebuild(&self.root_key)?;
        if !expired.is_empty() {
            self.store.write(|w| {
                for id in &expired {
                    w.delete(SESSIONS, id)?;
                }
                Ok::<_, IamError>(())
            })?;
        }
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
        Ok(())
    }

    /// The current state; cheap (one reference count).
    fn snapshot(&self) -> Arc<IamState> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes one change: `body` edits a draft of the state; its writes are committed in
    /// one store transaction, and the draft becomes the state only after the commit.
    /// Nothing is written or published if `body` fails.
    fn apply<T>(
        &self,
        body: impl FnOnce(&mut Draft<'_>) -> Result<T, IamError>,
    ) -> Result<T, IamError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        let mut draft = Draft::new((*self.snapshot()).clone(), &self.root_key, now);
        draft.drop_sessions_expired_before(now.plus_millis(-SESSION_RETENTION_MILLIS));
        let value = body(&mut draft)?;
        if !draft.is_unchanged() {
            self.store.write(|w| draft.write_to(w))?;
            *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(draft.into_state());
        }
        Ok(value)
    }

    /// Creates the account if it does not exist yet.
    pub fn ensure_account(&self, account: &AccountId) -> Result<(), IamError> {
        if self.account_exists(account.as_str()) {
            return Ok(());
        }
        self.apply(|draft| {
            if draft.state.accounts.contains_key(account.as_str()) {
                return Ok(());
            }
            draft.put_account(AccountRecord {
                id: account.as_str().to_owned(),
                created: draft.now,
            })
        })
    }

    pub fn account_exists(&self, account: &str) -> bool {
        self.snapshot().accounts.contains_key(account)
    }

    /// Ids of every account this server knows.
    pub fn accounts(&self) -> Vec<String> {
        self.snapshot().accounts.keys().cloned().collect()
    }

    /// Creates the user if missing and applies the managed policies the configuration
    /// declares for it (`policy_arns`, the declarative form the configuration file uses):
    /// policies newly declared are attached, policies no longer declared are detached, and
    /// attachments made through the IAM API are left alone.
    pub fn ensure_user(
        &self,
        account: &AccountId,
        name: &str,
        policy_arns: &[String],
    ) -> Result<(), IamError> {
        names::check_name(name, "userName", 64)
            .map_err(|e| IamError::InvalidName(format!("'{name}': {e}")))?;
        let account = account.as_str();
        self.apply(|draft| {
            if !draft.state.accounts.contains_key(account) {
                return Err(IamError::NoSuchAccount(account.to_owned()));
            }
            if let Some(arn) = policy_arns
                .iter()
                .find(|arn| draft.state.managed_document(arn).is_none())
            {
                return Err(IamError::UnknownPolicy(arn.clone()));
            }
            let mut declared: Vec<String> = Vec::with_capacity(policy_arns.len());
            for arn in policy_arns {
                if !declared.contains(arn) {
                    declared.push(arn.clone());
                }
            }
            let record = match draft.state.user(account, name).cloned() {
                Some(mut user) => {
                    let before = user
                        .declared_policies
                        .clone()
                        .unwrap_or_else(|| user.attached_policies.clone());
                    if user.declared_policies.is_some() && before == declared {
                        return Ok(());
                    }
                    user.attached_policies
                        .retain(|arn| !before.contains(arn) || declared.contains(arn));
                    for arn in &declared {
                        if !user.attached_policies.contains(arn) {
                            user.attached_policies.push(arn.clone());
                        }
                    }
                    user.declared_policies = Some(declared);
                    user
                }
                None => UserRecord {
                    account: account.to_owned(),
                    name: name.to_owned(),
                    path: "/".to_owned(),
                    user_id: model::new_unique_id("AIDA")?,
                    created: draft.now,
                    attached_policies: declared.clone(),
                    inline_policies: Default::default(),
                    tags: Vec::new(),
                    declared_policies: Some(declared),
                },
            };
            draft.put_user(record)
        })
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
        let account = account.as_str();
        self.apply(|draft| {
            let user = draft
                .state
                .user(account, user_name)
                .ok_or_else(|| {
                    IamError::NoSuchUser(format!("arn:aws:iam::{account}:user/{user_name}"))
                })?
                .clone();
            if draft.state.sessions.contains_key(access_key_id) {
                return Err(IamError::AccessKeyInUse(access_key_id.to_owned()));
            }
            let mut created = draft.now;
            if let Some(existing) = draft.state.access_keys.get(access_key_id) {
                if existing.account != account
                    || names::fold(&existing.user_name) != names::fold(&user.name)
                {
                    return Err(IamError::AccessKeyInUse(access_key_id.to_owned()));
                }
                let same_secret = draft
                    .state
                    .credentials
                    .get(access_key_id)
                    .is_some_and(|c| c.secret == *secret);
                if same_secret && existing.status == KeyStatus::Active {
                    return Ok(());
                }
                created = existing.created;
            }
            let record = new_access_key_record(draft, &user, access_key_id, secret, created)?;
            draft.put_access_key(record)
        })
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
        let mut ids: Vec<String> = self
            .snapshot()
            .keys_of(account.as_str(), user_name)
            .into_iter()
            .filter(|k| k.status == KeyStatus::Active)
            .map(|k| k.access_key_id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The identity-based policies in force for `principal` (empty for unknown ones): a
    /// user's attached and inline policies; for a role session, its role's.
    pub fn identity_policies(&self, principal: &Principal) -> PolicySet {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let found = match &principal.kind {
            PrincipalKind::AssumedRole { role_arn, .. } => state
                .in_force
                .get(role_arn)
                .filter(|f| principal.user_id.split(':').next() == Some(f.unique_id.as_str())),
            _ => state.in_force.get(&principal.arn),
        };
        found.map(|f| f.policies.clone()).unwrap_or_default()
    }

    /// Whether a principal named in a policy exists on this server, as AWS requires of
    /// the principals of key and trust policies: a known account, user or role. Sessions
    /// and federated users are accepted as AWS accepts them.
    pub fn knows(&self, reference: &PrincipalRef) -> bool {
        self.snapshot().knows(reference)
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

impl IamState {
    pub(crate) fn knows(&self, reference: &PrincipalRef) -> bool {
        match reference {
            PrincipalRef::Everyone
            | PrincipalRef::AssumedRoleSession { .. }
            | PrincipalRef::FederatedUser { .. } => true,
            PrincipalRef::Account { account } => self.accounts.contains_key(account),
            PrincipalRef::User { arn } => self.user_by_arn(arn).is_some(),
            PrincipalRef::Role { arn } => self.role_by_arn(arn).is_some(),
        }
    }
}

/// An active access key record for `user`, its secret wrapped by the root key.
fn new_access_key_record(
    draft: &Draft<'_>,
    user: &UserRecord,
    access_key_id: &str,
    secret: &SecretBytes,
    created: Timestamp,
) -> Result<AccessKeyRecord, IamError> {
    let wrapped = draft
        .root_key()
        .wrap(&state::access_key_label(access_key_id), secret.expose())?;
    Ok(AccessKeyRecord {
        access_key_id: access_key_id.to_owned(),
        account: user.account.clone(),
        user_name: user.name.clone(),
        wrapped_secret: state::b64_encode(&wrapped),
        status: KeyStatus::Active,
        created,
    })
}

impl CredentialResolver for Iam {
    fn resolve(&self, access_key_id: &str) -> Option<Arc<Credential>> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .credentials
            .get(access_key_id)
            .cloned()
    }
}

#[cfg(test)]
mod tests;
