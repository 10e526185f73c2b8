//! What a request looks like to the policy engine: who asks, for what, on what, and the
//! condition keys that describe the circumstances.

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The caller's ARN: `arn:aws:iam::ID:root`, `arn:aws:iam::ID:user/path/name`,
    /// `arn:aws:sts::ID:assumed-role/ROLE/SESSION`, or the service name for a service.
    pub arn: String,
    /// The caller's 12-digit account id (empty for a service principal).
    pub account: String,
    pub kind: PrincipalKind,
    /// `aws:userid`: the unique id (`AIDA…`, `AROA…:session`, or the account id for root).
    pub user_id: String,
    /// `aws:username`: the IAM user's friendly name; `None` for other kinds of caller.
    pub username: Option<String>,
}

/// What sort of identity a [`Principal`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// The account root user, `arn:aws:iam::111122223333:root`.
    Root,
    /// An IAM user, `arn:aws:iam::111122223333:user/path/name`.
    User,
    /// A role session, `arn:aws:sts::111122223333:assumed-role/Admin/sess`.
    AssumedRole {
        /// The role's ARN, with its path: `arn:aws:iam::111122223333:role/path/Admin`.
        role_arn: String,
        session_name: String,
    },
    /// An AWS service acting for itself, e.g. `rds.amazonaws.com`.
    Service { name: String },
}

/// The value of one condition key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextValue {
    Single(String),
    Multi(Vec<String>),
}

/// The request's condition keys. Key names are case-insensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextKeys {
    /// `(lowercased name, value)`; a handful of entries, so a linear scan beats hashing.
    entries: Vec<(String, ContextValue)>,
}

impl ContextKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a single-valued key, replacing any earlier value of the same name.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.insert(name, ContextValue::Single(value.into()));
    }

    /// Sets a multi-valued key (e.g. `kms:EncryptionContextKeys`).
    pub fn set_multi(&mut self, name: &str, values: Vec<String>) {
        self.insert(name, ContextValue::Multi(values));
    }

    /// Looks a key up by name, ignoring case.
    pub fn get(&self, name: &str) -> Option<&ContextValue> {
        self.get_lowercase(&name.to_lowercase())
    }

    /// Looks up a key whose name the caller has already lowercased (the evaluation hot path).
    pub(crate) fn get_lowercase(&self, lowercase_name: &str) -> Option<&ContextValue> {
        self.entries
            .iter()
            .find(|(name, _)| name == lowercase_name)
            .map(|(_, value)| value)
    }

    fn insert(&mut self, name: &str, value: ContextValue) {
        let name = name.to_lowercase();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name, value)),
        }
    }
}

/// One authorization question: may `principal` perform `action` on `resource`?
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    pub principal: &'a Principal,
    /// `service:Action`, e.g. `kms:Encrypt`.
    pub action: &'a str,
    /// The resource ARN, or `*` for actions that have no resource.
    pub resource: &'a str,
    pub context: &'a ContextKeys,
}

/// The values a condition key has in a request: borrowed, never copied.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyValues<'a> {
    One(&'a str),
    Many(&'a [String]),
}

impl<'a> KeyValues<'a> {
    pub(crate) fn any(self, mut test: impl FnMut(&str) -> bool) -> bool {
        match self {
            KeyValues::One(value) => test(value),
            KeyValues::Many(values) => values.iter().any(|v| test(v)),
        }
    }

    pub(crate) fn all(self, mut test: impl FnMut(&str) -> bool) -> bool {
        match self {
            KeyValues::One(value) => test(value),
            KeyValues::Many(values) => values.iter().all(|v| test(v)),
        }
    }
}

impl<'a> AuthzRequest<'a> {
    /// The values of a condition key (name already lowercased). Keys the caller put in the
    /// context win; the principal-derived global keys fill in when absent. An empty
    /// multi-valued key counts as absent, as AWS treats an empty set like a missing key.
    pub(crate) fn key_values(&self, lowercase_name: &str) -> Option<KeyValues<'a>> {
        match self.context.get_lowercase(lowercase_name) {
            Some(ContextValue::Single(value)) => Some(KeyValues::One(value)),
            Some(ContextValue::Multi(values)) if values.is_empty() => None,
            Some(ContextValue::Multi(values)) => Some(KeyValues::Many(values)),
            None => self.principal_key(lowercase_name).map(KeyValues::One),
        }
    }

    /// A single value usable as a policy variable; multi-valued keys cannot be variables.
    pub(crate) fn single_value(&self, lowercase_name: &str) -> Option<&'a str> {
        match self.key_values(lowercase_name)? {
            KeyValues::One(value) => Some(value),
            KeyValues::Many(_) => None,
        }
    }

    /// Global keys that describe the caller (IAM user guide, global condition keys).
    fn principal_key(&self, lowercase_name: &str) -> Option<&'a str> {
        let principal = self.principal;
        if matches!(principal.kind, PrincipalKind::Service { .. }) {
            return None;
        }
        match lowercase_name {
            "aws:username" => match principal.kind {
                PrincipalKind::User => principal.username.as_deref(),
                _ => None,
            },
            "aws:userid" => Some(&principal.user_id),
            "aws:principalaccount" => Some(&principal.account),
            // For a role session AWS puts the role's ARN here, not the session's.
            "aws:principalarn" => match &principal.kind {
                PrincipalKind::AssumedRole { role_arn, .. } => Some(role_arn),
                _ => Some(&principal.arn),
            },
            "aws:principaltype" => Some(match principal.kind {
                PrincipalKind::Root => "Account",
                PrincipalKind::User => "User",
                _ => "AssumedRole",
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_ignore_case_and_replace() {
        let mut keys = ContextKeys::new();
        keys.set("kms:EncryptionContext:AppName", "x");
        keys.set("KMS:encryptioncontext:appname", "y");
        assert_eq!(
            keys.get("kms:encryptionContext:APPNAME"),
            Some(&ContextValue::Single("y".into()))
        );
        assert_eq!(keys.entries.len(), 1);
    }

    #[test]
    fn principal_arn_of_a_session_is_the_role() {
        let principal = Principal {
            arn: "arn:aws:sts::111122223333:assumed-role/Admin/s".into(),
            account: "111122223333".into(),
            kind: PrincipalKind::AssumedRole {
                role_arn: "arn:aws:iam::111122223333:role/Admin".into(),
                session_name: "s".into(),
            },
            user_id: "AROAEXAMPLE:s".into(),
            username: None,
        };
        let context = ContextKeys::new();
        let request = AuthzRequest {
            principal: &principal,
            action: "kms:Encrypt",
            resource: "*",
            context: &context,
        };
        assert_eq!(
            request.single_value("aws:principalarn"),
            Some("arn:aws:iam::111122223333:role/Admin")
        );
        assert_eq!(request.single_value("aws:username"), None);
    }
}
