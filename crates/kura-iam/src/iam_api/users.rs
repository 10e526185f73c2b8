//! Users and their access keys.

use kura_edge::xml::XmlWriter;
use serde_json::json;

use super::{Call, refuse_permissions_boundary};
use crate::model::{self, KeyStatus, UserRecord};
use crate::names::{check_length, check_name, check_path, check_path_prefix, fold, invalid};
use crate::query::{paginate, write_list, write_paging, write_tags};
use crate::state::IamState;
use crate::{IamError, new_access_key_record};

const ACCESS_KEYS_PER_USER: usize = 2;

pub(crate) fn user_arn(account: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:user{path}{name}")
}

/// The ARN a call about user `name` is authorized on: the user's own if it exists.
pub(crate) fn target_user_arn(state: &IamState, account: &str, name: &str) -> String {
    state
        .user(account, name)
        .map(UserRecord::arn)
        .unwrap_or_else(|| user_arn(account, "/", name))
}

pub(crate) fn no_such_user(name: &str) -> IamError {
    IamError::NoSuchEntity(format!("The user with name {name} cannot be found."))
}

fn write_user_fields(w: &mut XmlWriter, user: &UserRecord, with_tags: bool) {
    w.leaf("Path", &user.path)
        .leaf("UserName", &user.name)
        .leaf("UserId", &user.user_id)
        .leaf("Arn", &user.arn())
        .leaf("CreateDate", &user.created.iso8601_millis());
    if with_tags {
        write_tags(w, &user.tags);
    }
}

pub(super) fn create_user(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let name = c.p.required("UserName")?;
    check_name(name, "userName", 64)?;
    let path = c.p.get("Path").unwrap_or("/");
    check_path(path)?;
    let tags = c.p.tags()?;
    refuse_permissions_boundary(&c.p)?;
    let arn = user_arn(c.account, path, name);
    c.authorize("iam:CreateUser", &arn)?;
    let account = c.account;
    let user = c.iam.apply(|draft| {
        if let Some(existing) = draft.state.user(account, name) {
            return Err(IamError::EntityAlreadyExists(format!(
                "User with name {} already exists.",
                existing.name
            )));
        }
        let user = UserRecord {
            account: account.to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
            user_id: model::new_unique_id("AIDA")?,
            created: draft.now,
            attached_policies: Vec::new(),
            inline_policies: Default::default(),
            tags,
            declared_policies: None,
        };
        draft.put_user(user.clone())?;
        Ok(user)
    })?;
    c.resource("AWS::IAM::User", arn);
    c.audit.response_elements = Some(json!({"user": {
        "path": user.path, "userName": user.name, "userId": user.user_id,
        "arn": user.arn(), "createDate": user.created.iso8601_seconds(),
    }}));
    w.element("User", |w| write_user_fields(w, &user, true));
    Ok(())
}

pub(super) fn get_user(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let name = c.user_name_or_caller()?;
    let state = c.iam.snapshot();
    let arn = target_user_arn(&state, c.account, &name);
    c.authorize("iam:GetUser", &arn)?;
    let user = state
        .user(c.account, &name)
        .ok_or_else(|| no_such_user(&name))?;
    c.resource("AWS::IAM::User", arn);
    w.element("User", |w| write_user_fields(w, user, true));
    Ok(())
}

pub(super) fn list_users(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let prefix = c.p.get("PathPrefix").unwrap_or("/");
    check_path_prefix(prefix)?;
    let max = c.p.max_items()?;
    c.authorize(
        "iam:ListUsers",
        &format!("arn:aws:iam::{}:user/", c.account),
    )?;
    let state = c.iam.snapshot();
    let users: Vec<(String, &UserRecord)> = state
        .users
        .iter()
        .filter(|((account, _), user)| account == c.account && user.path.starts_with(prefix))
        .map(|((_, folded), user)| (folded.clone(), user))
        .collect();
    let page = paginate(users, c.p.marker(), max)?;
    write_list(w, "Users", &page.items, |w, user| {
        write_user_fields(w, user, false)
    });
    write_paging(w, page.marker.as_deref());
    Ok(())
}

pub(super) fn delete_user(c: &mut Call<'_>) -> Result<(), IamError> {
    let name = c.p.required("UserName")?;
    check_name(name, "userName", 128)?;
    let arn = target_user_arn(&c.iam.snapshot(), c.account, name);
    c.authorize("iam:DeleteUser", &arn)?;
    let account = c.account;
    c.iam.apply(|draft| {
        let user = draft
            .state
            .user(account, name)
            .ok_or_else(|| no_such_user(name))?;
        if !draft.state.keys_of(account, &user.name).is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete access keys first.".into(),
            ));
        }
        if !user.inline_policies.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete policies first.".into(),
            ));
        }
        if !user.attached_policies.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must detach all policies first.".into(),
            ));
        }
        let name = user.name.clone();
        draft.delete_user(account, &name)
    })?;
    c.resource("AWS::IAM::User", arn);
    Ok(())
}

fn check_access_key_id(id: &str) -> Result<(), IamError> {
    check_length(id, "accessKeyId", 16, 128)?;
    if id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(invalid(
            id,
            "accessKeyId",
            "Member must satisfy regular expression pattern: [\\w]+",
        ))
    }
}

fn no_such_key(id: &str) -> IamError {
    IamError::NoSuchEntity(format!("The Access Key with id {id} cannot be found."))
}

pub(super) fn create_access_key(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let name = c.user_name_or_caller()?;
    let arn = target_user_arn(&c.iam.snapshot(), c.account, &name);
    c.authorize("iam:CreateAccessKey", &arn)?;
    let account = c.account;
    let access_key_id = model::new_unique_id("AKIA")?;
    let secret = model::new_secret_access_key()?;
    let (record, user_name) = c.iam.apply(|draft| {
        let user = draft
            .state
            .user(account, &name)
            .ok_or_else(|| no_such_user(&name))?
            .clone();
        if draft.state.keys_of(account, &user.name).len() >= ACCESS_KEYS_PER_USER {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for AccessKeysPerUser: {ACCESS_KEYS_PER_USER}"
            )));
        }
        let record = new_access_key_record(draft, &user, &access_key_id, &secret, draft.now)?;
        draft.put_access_key(record.clone())?;
        Ok((record, user.name))
    })?;
    let secret_text = std::str::from_utf8(secret.expose())
        .map_err(|_| IamError::Internal("generated secret is not text".into()))?;
    c.resource("AWS::IAM::User", arn);
    c.audit.response_elements = Some(json!({"accessKey": {
        "userName": user_name, "accessKeyId": record.access_key_id,
        "status": "Active", "createDate": record.created.iso8601_seconds(),
    }}));
    w.element("AccessKey", |w| {
        w.leaf("UserName", &user_name)
            .leaf("AccessKeyId", &record.access_key_id)
            .leaf("Status", record.status.as_str())
            .leaf("SecretAccessKey", secret_text)
            .leaf("CreateDate", &record.created.iso8601_millis());
    });
    Ok(())
}

pub(super) fn list_access_keys(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let name = c.user_name_or_caller()?;
    let max = c.p.max_items()?;
    let state = c.iam.snapshot();
    let arn = target_user_arn(&state, c.account, &name);
    c.authorize("iam:ListAccessKeys", &arn)?;
    let user = state
        .user(c.account, &name)
        .ok_or_else(|| no_such_user(&name))?;
    let keys: Vec<(String, _)> = state
        .keys_of(c.account, &user.name)
        .into_iter()
        .map(|k| (format!("{:020}/{}", k.created.millis(), k.access_key_id), k))
        .collect();
    let page = paginate(keys, c.p.marker(), max)?;
    write_list(w, "AccessKeyMetadata", &page.items, |w, key| {
        w.leaf("UserName", &user.name)
            .leaf("AccessKeyId", &key.access_key_id)
            .leaf("Status", key.status.as_str())
            .leaf("CreateDate", &key.created.iso8601_millis());
    });
    write_paging(w, page.marker.as_deref());
    Ok(())
}

pub(super) fn delete_access_key(c: &mut Call<'_>) -> Result<(), IamError> {
    let id = c.p.required("AccessKeyId")?;
    check_access_key_id(id)?;
    let name = c.user_name_or_caller()?;
    let arn = target_user_arn(&c.iam.snapshot(), c.account, &name);
    c.authorize("iam:DeleteAccessKey", &arn)?;
    let account = c.account;
    c.iam.apply(|draft| {
        let user = draft
            .state
            .user(account, &name)
            .ok_or_else(|| no_such_user(&name))?;
        let owned = draft
            .state
            .access_keys
            .get(id)
            .is_some_and(|k| k.account == account && fold(&k.user_name) == fold(&user.name));
        if !owned {
            return Err(no_such_key(id));
        }
        draft.delete_access_key(id);
        Ok(())
    })?;
    c.resource("AWS::IAM::User", arn);
    Ok(())
}

pub(super) fn update_access_key(c: &mut Call<'_>) -> Result<(), IamError> {
    let id = c.p.required("AccessKeyId")?;
    check_access_key_id(id)?;
    let status = match c.p.required("Status")? {
        "Active" => KeyStatus::Active,
        "Inactive" => KeyStatus::Inactive,
        other => {
            return Err(invalid(
                other,
                "status",
                "Member must satisfy enum value set: [Active, Inactive]",
            ));
        }
    };
    let name = c.user_name_or_caller()?;
    let arn = target_user_arn(&c.iam.snapshot(), c.account, &name);
    c.authorize("iam:UpdateAccessKey", &arn)?;
    let account = c.account;
    c.iam.apply(|draft| {
        let user = draft
            .state
            .user(account, &name)
            .ok_or_else(|| no_such_user(&name))?;
        let mut key = draft
            .state
            .access_keys
            .get(id)
            .filter(|k| k.account == account && fold(&k.user_name) == fold(&user.name))
            .cloned()
            .ok_or_else(|| no_such_key(id))?;
        if key.status == status {
            return Ok(());
        }
        key.status = status;
        draft.put_access_key(key)
    })?;
    c.resource("AWS::IAM::User", arn);
    Ok(())
}
