//! Turning a `KeyId` request member into a key: key id, key ARN, alias name or alias ARN,
//! each accepted exactly where AWS accepts it.

use std::sync::Arc;

use kura_edge::RequestContext;
use uuid::Uuid;

use crate::Kms;
use crate::error::{KmsError, KmsResult};
use crate::registry::KeyEntry;

/// The forms a `KeyId` member can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyRef {
    Id(Uuid),
    KeyArn {
        region: String,
        account: String,
        id: Uuid,
    },
    AliasName(String),
    AliasArn {
        region: String,
        account: String,
        name: String,
    },
}

/// Whether an operation accepts aliases for its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aliases {
    Accepted,
    Refused,
}

/// A resolved key, and the alias the request named it by (for `kms:RequestAlias`).
pub(crate) struct Resolved {
    pub key: Arc<KeyEntry>,
    pub via_alias: Option<String>,
}

pub(crate) fn parse_key_ref(text: &str) -> Option<KeyRef> {
    if let Some(rest) = text.strip_prefix("arn:aws:kms:") {
        let mut parts = rest.splitn(3, ':');
        let (Some(region), Some(account), Some(resource)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let (region, account) = (region.to_owned(), account.to_owned());
        if let Some(id) = resource.strip_prefix("key/") {
            return Uuid::try_parse(id).ok().map(|id| KeyRef::KeyArn {
                region,
                account,
                id,
            });
        }
        if resource.starts_with("alias/") {
            return Some(KeyRef::AliasArn {
                region,
                account,
                name: resource.to_owned(),
            });
        }
        return None;
    }
    if text.starts_with("alias/") {
        return Some(KeyRef::AliasName(text.to_owned()));
    }
    // AWS prints key ids in lowercase hyphenated form only.
    let id = Uuid::try_parse(text).ok()?;
    (id.hyphenated().to_string() == text).then_some(KeyRef::Id(id))
}

impl Kms {
    /// Resolves `key_id` for a request by `ctx`. Unknown keys are `NotFoundException`
    /// with AWS's messages; aliases under `alias/aws/` create the AWS managed key on first
    /// use, as AWS does.
    pub(crate) fn resolve(
        &self,
        ctx: &RequestContext,
        key_id: &str,
        aliases: Aliases,
    ) -> KmsResult<Resolved> {
        let caller_account = ctx.caller.principal.account.as_str();
        let region = ctx.region.as_str();
        let invalid = || KmsError::NotFound(format!("Invalid keyId '{key_id}'"));
        let reference = parse_key_ref(key_id).ok_or_else(invalid)?;
        let (account, alias_name) = match reference {
            KeyRef::Id(id) => return self.key_in(caller_account, region, id).map(direct),
            KeyRef::KeyArn {
                region: r,
                account,
                id,
            } => {
                if r != region {
                    return Err(self.missing_key(&r, &account, id));
                }
                return self.key_in(&account, region, id).map(direct);
            }
            _ if aliases == Aliases::Refused => return Err(invalid()),
            KeyRef::AliasName(name) => (caller_account.to_owned(), name),
            KeyRef::AliasArn {
                region: r,
                account,
                name,
            } => {
                if r != region {
                    return Err(alias_not_found(&r, &account, &name));
                }
                (account, name)
            }
        };
        let alias = match self.registry.alias(&account, &alias_name) {
            Some(alias) => alias,
            None if account == caller_account => self
                .ensure_managed_key(ctx, &alias_name)?
                .ok_or_else(|| alias_not_found(region, &account, &alias_name))?,
            None => return Err(alias_not_found(region, &account, &alias_name)),
        };
        let key = self
            .registry
            .key(&alias.target)
            .ok_or_else(|| alias_not_found(region, &account, &alias_name))?;
        Ok(Resolved {
            key,
            via_alias: Some(alias_name),
        })
    }

    fn key_in(&self, account: &str, region: &str, id: Uuid) -> KmsResult<Arc<KeyEntry>> {
        match self.registry.key(&id) {
            Some(key) if key.record.account == account && key.record.region == region => Ok(key),
            _ => Err(self.missing_key(region, account, id)),
        }
    }

    fn missing_key(&self, region: &str, account: &str, id: Uuid) -> KmsError {
        KmsError::NotFound(format!(
            "Key 'arn:aws:kms:{region}:{account}:key/{id}' does not exist"
        ))
    }
}

fn direct(key: Arc<KeyEntry>) -> Resolved {
    Resolved {
        key,
        via_alias: None,
    }
}

fn alias_not_found(region: &str, account: &str, name: &str) -> KmsError {
    KmsError::NotFound(format!(
        "Alias arn:aws:kms:{region}:{account}:{name} is not found."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_reference_form() {
        let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        let uuid = Uuid::try_parse(id).ok();
        assert_eq!(parse_key_ref(id), uuid.map(KeyRef::Id));
        assert!(matches!(
            parse_key_ref(&format!("arn:aws:kms:us-east-1:111122223333:key/{id}")),
            Some(KeyRef::KeyArn { .. })
        ));
        assert_eq!(
            parse_key_ref("alias/my"),
            Some(KeyRef::AliasName("alias/my".into()))
        );
        assert!(matches!(
            parse_key_ref("arn:aws:kms:us-east-1:111122223333:alias/aws/rds"),
            Some(KeyRef::AliasArn { .. })
        ));
        for bad in [
            "",
            "nope",
            "arn:aws:kms:us-east-1",
            "arn:aws:kms:r:a:key/zzz",
            "1234ABCD-12AB-34CD-56EF-1234567890AB",
            "arn:aws:kms:r:a:grant/x",
        ] {
            assert_eq!(parse_key_ref(bad), None, "{bad}");
        }
    }
}
