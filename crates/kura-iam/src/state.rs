//! The in-memory view of the IAM records and the one way to change it.
//!
//! [`IamState`] holds every record plus what is derived from them: the credential table
//! the edge authenticates against, and the parsed identity policies in force for each
//! user and role. A change is made on a [`Draft`] (a copy of the state that records the
//! store writes it implies); [`crate::Iam::apply`] commits those writes in one store
//! transaction and only then publishes the draft as the new state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use kura_crypto::{RootKey, SecretBytes};
use kura_edge::{Caller, Credential, IdentityType, SessionIssuer};
use kura_policy::{PolicyDocument, PolicyKind};
use kura_store::{Table, Writer};
use kura_types::Timestamp;
use serde::Serialize;

use crate::model::{
    ACCESS_KEYS, ACCOUNTS, AccessKeyRecord, AccountRecord, KeyStatus, POLICIES, PolicyRecord,
    ROLES, RoleRecord, SESSIONS, SessionRecord, USERS, UserRecord,
};
use crate::names::{fold, parse_entity_arn};
use crate::{IamError, PolicySet, managed};

/// `(account, lowercased name)`: names are unique in an account regardless of case.
pub(crate) type NameKey = (String, String);

pub(crate) fn name_key(account: &str, name: &str) -> NameKey {
    (account.to_owned(), fold(name))
}

/// A role and its parsed trust policy.
#[derive(Clone)]
pub(crate) struct RoleEntry {
    pub record: RoleRecord,
    pub trust: Arc<PolicyDocument>,
}

/// A customer managed policy and its parsed default version.
#[derive(Clone)]
pub(crate) struct PolicyEntry {
    pub record: PolicyRecord,
    pub document: Arc<PolicyDocument>,
}

/// The identity policies in force for one user or role.
#[derive(Clone)]
pub(crate) struct InForce {
    /// The user's or role's unique id: a session counts only for the role that issued it,
    /// not for a later role of the same name.
    pub unique_id: String,
    pub policies: PolicySet,
}

#[derive(Clone, Default)]
pub(crate) struct IamState {
    pub accounts: BTreeMap<String, AccountRecord>,
    pub users: BTreeMap<NameKey, UserRecord>,
    pub roles: BTreeMap<NameKey, RoleEntry>,
    pub policies: BTreeMap<NameKey, PolicyEntry>,
    pub access_keys: BTreeMap<String, AccessKeyRecord>,
    pub sessions: BTreeMap<String, SessionRecord>,
    /// Access key id → credential, for active access keys and live sessions.
    pub credentials: HashMap<String, Arc<Credential>>,
    /// User or role ARN → identity policies in force.
    pub in_force: HashMap<String, InForce>,
}

impl IamState {
    pub fn user(&self, account: &str, name: &str) -> Option<&UserRecord> {
        self.users.get(&name_key(account, name))
    }

    pub fn role(&self, account: &str, name: &str) -> Option<&RoleEntry> {
        self.roles.get(&name_key(account, name))
    }

    pub fn user_by_arn(&self, arn: &str) -> Option<&UserRecord> {
        let parsed = parse_entity_arn(arn).filter(|a| a.kind == "user")?;
        self.user(parsed.account, parsed.name)
            .filter(|user| user.arn() == arn)
    }

    pub fn role_by_arn(&self, arn: &str) -> Option<&RoleEntry> {
        let parsed = parse_entity_arn(arn).filter(|a| a.kind == "role")?;
        self.role(parsed.account, parsed.name)
            .filter(|role| role.record.arn() == arn)
    }

    /// A customer managed policy by ARN.
    pub fn policy_by_arn(&self, arn: &str) -> Option<&PolicyEntry> {
        let parsed = parse_entity_arn(arn).filter(|a| a.kind == "policy")?;
        self.policies
            .get(&name_key(parsed.account, parsed.name))
            .filter(|policy| policy.record.arn() == arn)
    }

    /// The document of an attachable managed policy (AWS managed or customer managed).
    pub fn managed_document(&self, arn: &str) -> Option<Arc<PolicyDocument>> {
        if arn.starts_with(managed::AWS_MANAGED_PREFIX) {
            managed::managed_policy(arn).ok()
        } else {
            self.policy_by_arn(arn).map(|p| p.document.clone())
        }
    }

    /// How many users and roles of `account` have the managed policy `arn` attached.
    pub fn attachment_count(&self, account: &str, arn: &str) -> usize {
        let in_account = |key: &NameKey| key.0 == account;
        let users = self
            .users
            .iter()
            .filter(|(k, u)| in_account(k) && u.attached_policies.iter().any(|a| a == arn))
            .count();
        let roles = self
            .roles
            .iter()
            .filter(|(k, r)| in_account(k) && r.record.attached_policies.iter().any(|a| a == arn))
            .count();
        users + roles
    }

    /// The parsed policies of a user or role: attached managed ones, then inline ones.
    /// Attachments whose policy is gone are skipped (attaching checks existence, and a
    /// policy cannot be deleted while attached).
    fn policy_set(
        &self,
        attached: &[String],
        inline: &BTreeMap<String, String>,
    ) -> Result<PolicySet, IamError> {
        let mut documents = Vec::with_capacity(attached.len() + inline.len());
        for arn in attached {
            match self.managed_document(arn) {
                Some(document) => documents.push(document),
                None => tracing::warn!(policy = %arn, "attached policy not found; ignored"),
            }
        }
        for (name, text) in inline {
            let document = PolicyDocument::parse(text, PolicyKind::Identity).map_err(|e| {
                IamError::Internal(format!("stored inline policy {name} does not parse: {e}"))
            })?;
            documents.push(Arc::new(document));
        }
        Ok(Arc::new(documents))
    }

    fn refresh_user(&mut self, key: &NameKey) -> Result<(), IamError> {
        let Some(user) = self.users.get(key) else {
            return Ok(());
        };
        let in_force = InForce {
            unique_id: user.user_id.clone(),
            policies: self.policy_set(&user.attached_policies, &user.inline_policies)?,
        };
        let arn = user.arn();
        self.in_force.insert(arn, in_force);
        Ok(())
    }

    fn refresh_role(&mut self, key: &NameKey) -> Result<(), IamError> {
        let Some(role) = self.roles.get(key) else {
            return Ok(());
        };
        let in_force = InForce {
            unique_id: role.record.role_id.clone(),
            policies: self
                .policy_set(&role.record.attached_policies, &role.record.inline_policies)?,
        };
        let arn = role.record.arn();
        self.in_force.insert(arn, in_force);
        Ok(())
    }

    /// Rebuilds everything derived from the records (at start).
    pub fn rebuild(&mut self, root_key: &RootKey) -> Result<(), IamError> {
        self.in_force.clear();
        self.credentials.clear();
        let users: Vec<NameKey> = self.users.keys().cloned().collect();
        for key in &users {
            self.refresh_user(key)?;
        }
        let roles: Vec<NameKey> = self.roles.keys().cloned().collect();
        for key in &roles {
            self.refresh_role(key)?;
        }
        let keys: Vec<AccessKeyRecord> = self.access_keys.values().cloned().collect();
        for key in &keys {
            self.refresh_access_key(key, root_key)?;
        }
        let sessions: Vec<SessionRecord> = self.sessions.values().cloned().collect();
        for session in &sessions {
            let credential = session_credential(session, root_key)?;
            self.credentials
                .insert(session.access_key_id.clone(), Arc::new(credential));
        }
        Ok(())
    }

    fn refresh_access_key(
        &mut self,
        key: &AccessKeyRecord,
        root_key: &RootKey,
    ) -> Result<(), IamError> {
        let user = self.user(&key.account, &key.user_name);
        match (key.status, user) {
            (KeyStatus::Active, Some(user)) => {
                let credential = user_credential(user, key, root_key)?;
                self.credentials
                    .insert(key.access_key_id.clone(), Arc::new(credential));
            }
            _ => {
                self.credentials.remove(&key.access_key_id);
            }
        }
        Ok(())
    }

    /// Every access key of a user, oldest first.
    pub fn keys_of(&self, account: &str, user_name: &str) -> Vec<&AccessKeyRecord> {
        let user = fold(user_name);
        let mut keys: Vec<&AccessKeyRecord> = self
            .access_keys
            .values()
            .filter(|k| k.account == account && fold(&k.user_name) == user)
            .collect();
        keys.sort_by(|a, b| (a.created, &a.access_key_id).cmp(&(b.created, &b.access_key_id)));
        keys
    }
}

fn b64_decode(text: &str, id: &str) -> Result<Vec<u8>, IamError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| IamError::Unwrap(id.to_owned()))
}

pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn access_key_label(access_key_id: &str) -> Vec<u8> {
    format!("kura/iam/access-key/{access_key_id}").into_bytes()
}

pub(crate) fn session_secret_label(access_key_id: &str) -> Vec<u8> {
    format!("kura/sts/session-secret/{access_key_id}").into_bytes()
}

pub(crate) fn session_token_label(access_key_id: &str) -> Vec<u8> {
    format!("kura/sts/session-token/{access_key_id}").into_bytes()
}

fn user_credential(
    user: &UserRecord,
    key: &AccessKeyRecord,
    root_key: &RootKey,
) -> Result<Credential, IamError> {
    let wrapped = b64_decode(&key.wrapped_secret, &key.access_key_id)?;
    let secret = root_key
        .unwrap(&access_key_label(&key.access_key_id), &wrapped)
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

fn session_credential(session: &SessionRecord, root_key: &RootKey) -> Result<Credential, IamError> {
    let id = &session.access_key_id;
    let secret = root_key
        .unwrap(
            &session_secret_label(id),
            &b64_decode(&session.wrapped_secret, id)?,
        )
        .map_err(|_| IamError::Unwrap(id.clone()))?;
    let token = root_key
        .unwrap(
            &session_token_label(id),
            &b64_decode(&session.wrapped_token, id)?,
        )
        .map_err(|_| IamError::Unwrap(id.clone()))?;
    let token =
        String::from_utf8(token.expose().to_vec()).map_err(|_| IamError::Unwrap(id.clone()))?;
    Ok(new_session_credential(session, secret, token))
}

/// The credential of a session, from its record and its plaintext secret and token.
pub(crate) fn new_session_credential(
    session: &SessionRecord,
    secret: SecretBytes,
    token: String,
) -> Credential {
    Credential {
        secret,
        session_token: Some(token),
        expires: Some(session.expires),
        caller: Arc::new(Caller {
            principal: session.principal(),
            identity_type: IdentityType::AssumedRole,
            access_key_id: session.access_key_id.clone(),
            session: Some(SessionIssuer {
                role_arn: session.role_arn.clone(),
                role_id: session.role_id.clone(),
                role_name: session.role_name.clone(),
                created: session.created,
            }),
        }),
    }
}

/// One store write a change implies.
enum StoreOp {
    Put {
        table: Table,
        key: String,
        value: serde_json::Value,
    },
    Delete {
        table: Table,
        key: String,
    },
}

/// A change in the making: a copy of the state, edited, and the store writes that make
/// the edits durable.
pub(crate) struct Draft<'a> {
    pub state: IamState,
    ops: Vec<StoreOp>,
    root_key: &'a RootKey,
    pub now: Timestamp,
}

impl<'a> Draft<'a> {
    pub fn new(state: IamState, root_key: &'a RootKey, now: Timestamp) -> Self {
        Self {
            state,
            ops: Vec::new(),
            root_key,
            now,
        }
    }

    pub fn root_key(&self) -> &RootKey {
        self.root_key
    }

    pub fn is_unchanged(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn into_state(self) -> IamState {
        self.state
    }

    /// Writes the recorded changes in the given store transaction.
    pub fn write_to(&self, writer: &mut Writer<'_>) -> Result<(), IamError> {
        for op in &self.ops {
            match op {
                StoreOp::Put { table, key, value } => writer.put(*table, key, value)?,
                StoreOp::Delete { table, key } => {
                    writer.delete(*table, key)?;
                }
            }
        }
        Ok(())
    }

    fn put<T: Serialize>(&mut self, table: Table, key: String, value: &T) -> Result<(), IamError> {
        let value = serde_json::to_value(value)
            .map_err(|e| IamError::Internal(format!("encoding {}/{key}: {e}", table.0)))?;
        self.ops.push(StoreOp::Put { table, key, value });
        Ok(())
    }

    fn delete(&mut self, table: Table, key: String) {
        self.ops.push(StoreOp::Delete { table, key });
    }

    pub fn put_account(&mut self, record: AccountRecord) -> Result<(), IamError> {
        self.put(ACCOUNTS, record.id.clone(), &record)?;
        self.state.accounts.insert(record.id.clone(), record);
        Ok(())
    }

    /// Creates or replaces a user (and refreshes its policies and credentials).
    pub fn put_user(&mut self, record: UserRecord) -> Result<(), IamError> {
        self.put(USERS, record.store_key(), &record)?;
        let key = name_key(&record.account, &record.name);
        self.state.users.insert(key.clone(), record);
        self.state.refresh_user(&key)
    }

    pub fn delete_user(&mut self, account: &str, name: &str) -> Result<(), IamError> {
        let key = name_key(account, name);
        let Some(user) = self.state.users.remove(&key) else {
            return Ok(());
        };
        self.delete(USERS, user.store_key());
        self.state.in_force.remove(&user.arn());
        let keys: Vec<String> = self
            .state
            .keys_of(account, &user.name)
            .iter()
            .map(|k| k.access_key_id.clone())
            .collect();
        for id in keys {
            self.delete_access_key(&id);
        }
        Ok(())
    }

    pub fn put_role(
        &mut self,
        record: RoleRecord,
        trust: Arc<PolicyDocument>,
    ) -> Result<(), IamError> {
        self.put(ROLES, record.store_key(), &record)?;
        let key = name_key(&record.account, &record.name);
        self.state
            .roles
            .insert(key.clone(), RoleEntry { record, trust });
        self.state.refresh_role(&key)
    }

    /// Deletes a role. Its sessions stay until they expire, as AWS's do, but are worth
    /// nothing: the role's policies are gone, and a new role of the same name has a new
    /// unique id that they do not carry.
    pub fn delete_role(&mut self, account: &str, name: &str) {
        if let Some(role) = self.state.roles.remove(&name_key(account, name)) {
            self.delete(ROLES, role.record.store_key());
            self.state.in_force.remove(&role.record.arn());
        }
    }

    pub fn put_policy(
        &mut self,
        record: PolicyRecord,
        document: Arc<PolicyDocument>,
    ) -> Result<(), IamError> {
        self.put(POLICIES, record.store_key(), &record)?;
        let key = name_key(&record.account, &record.name);
        self.state
            .policies
            .insert(key, PolicyEntry { record, document });
        Ok(())
    }

    pub fn delete_policy(&mut self, account: &str, name: &str) {
        if let Some(policy) = self.state.policies.remove(&name_key(account, name)) {
            self.delete(POLICIES, policy.record.store_key());
        }
    }

    /// Creates or replaces an access key; its credential is published while it is active.
    pub fn put_access_key(&mut self, record: AccessKeyRecord) -> Result<(), IamError> {
        self.put(ACCESS_KEYS, record.access_key_id.clone(), &record)?;
        let root_key = self.root_key;
        self.state.refresh_access_key(&record, root_key)?;
        self.state
            .access_keys
            .insert(record.access_key_id.clone(), record);
        Ok(())
    }

    pub fn delete_access_key(&mut self, access_key_id: &str) {
        if self.state.access_keys.remove(access_key_id).is_some() {
            self.delete(ACCESS_KEYS, access_key_id.to_owned());
        }
        self.state.credentials.remove(access_key_id);
    }

    pub fn put_session(
        &mut self,
        record: SessionRecord,
        secret: SecretBytes,
        token: String,
    ) -> Result<(), IamError> {
        self.put(SESSIONS, record.access_key_id.clone(), &record)?;
        let credential = new_session_credential(&record, secret, token);
        self.state
            .credentials
            .insert(record.access_key_id.clone(), Arc::new(credential));
        self.state
            .sessions
            .insert(record.access_key_id.clone(), record);
        Ok(())
    }

    /// Forgets sessions that expired before `cutoff`.
    pub fn drop_sessions_expired_before(&mut self, cutoff: Timestamp) {
        let expired: Vec<String> = self
            .state
            .sessions
            .values()
            .filter(|s| s.expires < cutoff)
            .map(|s| s.access_key_id.clone())
            .collect();
        for id in expired {
            self.state.sessions.remove(&id);
            self.state.credentials.remove(&id);
            self.delete(SESSIONS, id);
        }
    }
}
