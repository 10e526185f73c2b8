//! Roles and their trust policies.

use std::sync::Arc;

use kura_edge::xml::XmlWriter;
use kura_policy::{PolicyDocument, PrincipalRef};
use serde_json::json;

use super::{Call, policy_size, refuse_permissions_boundary};
use crate::IamError;
use crate::model::{self, RoleRecord};
use crate::names::{
    check_document_text, check_length, check_name, check_path, check_path_prefix, invalid,
};
use crate::query::{paginate, url_encode_document, write_list, write_paging, write_tags};
use crate::state::IamState;

const DEFAULT_MAX_SESSION: u32 = 3600;
/// `ACLSizePerRole`: the largest trust policy, whitespace excluded.
const TRUST_POLICY_QUOTA: usize = 2048;

pub(crate) fn role_arn(account: &str, path: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role{path}{name}")
}

pub(crate) fn target_role_arn(state: &IamState, account: &str, name: &str) -> String {
    state
        .role(account, name)
        .map(|r| r.record.arn())
        .unwrap_or_else(|| role_arn(account, "/", name))
}

pub(crate) fn no_such_role(name: &str) -> IamError {
    IamError::NoSuchEntity(format!("The role with name {name} cannot be found."))
}

fn write_role_fields(w: &mut XmlWriter, role: &RoleRecord, with_tags: bool) {
    w.leaf("Path", &role.path)
        .leaf("RoleName", &role.name)
        .leaf("RoleId", &role.role_id)
        .leaf("Arn", &role.arn())
        .leaf("CreateDate", &role.created.iso8601_millis())
        .leaf(
            "AssumeRolePolicyDocument",
            &url_encode_document(&role.trust_policy),
        )
        .optional_leaf("Description", role.description.as_deref())
        .leaf("MaxSessionDuration", &role.max_session_duration.to_string());
    if with_tags {
        write_tags(w, &role.tags);
    }
}

fn principal_text(reference: &PrincipalRef) -> String {
    match reference {
        PrincipalRef::Everyone => "*".to_owned(),
        PrincipalRef::Account { account } => account.clone(),
        PrincipalRef::User { arn }
        | PrincipalRef::Role { arn }
        | PrincipalRef::AssumedRoleSession { arn }
        | PrincipalRef::FederatedUser { arn } => arn.clone(),
    }
}

/// Parses and checks a trust policy: its syntax, its size, and that every principal it
/// names exists (AWS resolves them when the policy is saved).
fn parse_trust(state: &IamState, document: &str, member: &str) -> Result<PolicyDocument, IamError> {
    check_document_text(document, member)?;
    let parsed = crate::authz::parse_trust_policy(document)
        .map_err(|e| IamError::MalformedPolicyDocument(e.to_string()))?;
    for statement in parsed.statements() {
        if let Some(unknown) = statement
            .aws_principals()
            .iter()
            .find(|reference| !state.knows(reference))
        {
            return Err(IamError::MalformedPolicyDocument(format!(
                "Invalid principal in policy: \"AWS\":\"{}\"",
                principal_text(unknown)
            )));
        }
    }
    if policy_size(document) > TRUST_POLICY_QUOTA {
        return Err(IamError::LimitExceeded(format!(
            "Cannot exceed quota for ACLSizePerRole: {TRUST_POLICY_QUOTA}"
        )));
    }
    Ok(parsed)
}

pub(super) fn create_role(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let name = c.p.required("RoleName")?;
    check_name(name, "roleName", 64)?;
    let path = c.p.get("Path").unwrap_or("/");
    check_path(path)?;
    let document = c.p.required("AssumeRolePolicyDocument")?;
    check_document_text(document, "assumeRolePolicyDocument")?;
    let description = c.p.get("Description");
    if let Some(description) = description {
        check_length(description, "description", 0, 1000)?;
    }
    let max_session = match c.p.int("MaxSessionDuration")? {
        None => DEFAULT_MAX_SESSION,
        Some(n) if n < 3600 => {
            return Err(invalid(
                &n.to_string(),
                "maxSessionDuration",
                "Member must have value greater than or equal to 3600",
            ));
        }
        Some(n) if n > 43200 => {
            return Err(invalid(
                &n.to_string(),
                "maxSessionDuration",
                "Member must have value less than or equal to 43200",
            ));
        }
        Some(n) => u32::try_from(n).unwrap_or(DEFAULT_MAX_SESSION),
    };
    let tags = c.p.tags()?;
    refuse_permissions_boundary(&c.p)?;
    let arn = role_arn(c.account, path, name);
    c.authorize("iam:CreateRole", &arn)?;
    let account = c.account;
    let role = c.iam.apply(|draft| {
        let trust = parse_trust(&draft.state, document, "assumeRolePolicyDocument")?;
        if let Some(existing) = draft.state.role(account, name) {
            return Err(IamError::EntityAlreadyExists(format!(
                "Role with name {} already exists.",
                existing.record.name
            )));
        }
        let role = RoleRecord {
            account: account.to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
            role_id: model::new_unique_id("AROA")?,
            created: draft.now,
            trust_policy: document.to_owned(),
            description: description.map(str::to_owned),
            max_session_duration: max_session,
            attached_policies: Vec::new(),
            inline_policies: Default::default(),
            tags,
        };
        draft.put_role(role.clone(), Arc::new(trust))?;
        Ok(role)
    })?;
    c.resource("AWS::IAM::Role", arn);
    c.audit.response_elements = Some(json!({"role": {
        "path": role.path, "roleName": role.name, "roleId": role.role_id,
        "arn": role.arn(), "createDate": role.created.iso8601_seconds(),
        "assumeRolePolicyDocument": url_encode_document(&role.trust_policy),
    }}));
    w.element("Role", |w| write_role_fields(w, &role, true));
    Ok(())
}

pub(super) fn get_role(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let name = c.p.required("RoleName")?;
    check_name(name, "roleName", 64)?;
    let state = c.iam.snapshot();
    let arn = target_role_arn(&state, c.account, name);
    c.authorize("iam:GetRole", &arn)?;
    let role = state
        .role(c.account, name)
        .ok_or_else(|| no_such_role(name))?;
    c.resource("AWS::IAM::Role", arn);
    w.element("Role", |w| {
        write_role_fields(w, &role.record, true);
        w.element("RoleLastUsed", |_| {});
    });
    Ok(())
}

pub(super) fn list_roles(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let prefix = c.p.get("PathPrefix").unwrap_or("/");
    check_path_prefix(prefix)?;
    let max = c.p.max_items()?;
    c.authorize(
        "iam:ListRoles",
        &format!("arn:aws:iam::{}:role/", c.account),
    )?;
    let state = c.iam.snapshot();
    let roles: Vec<(String, &RoleRecord)> = state
        .roles
        .iter()
        .filter(|((account, _), role)| account == c.account && role.record.path.starts_with(prefix))
        .map(|((_, folded), role)| (folded.clone(), &role.record))
        .collect();
    let page = paginate(roles, c.p.marker(), max)?;
    write_list(w, "Roles", &page.items, |w, role| {
        write_role_fields(w, role, false)
    });
    write_paging(w, page.marker.as_deref());
    Ok(())
}

pub(super) fn delete_role(c: &mut Call<'_>) -> Result<(), IamError> {
    let name = c.p.required("RoleName")?;
    check_name(name, "roleName", 64)?;
    let arn = target_role_arn(&c.iam.snapshot(), c.account, name);
    c.authorize("iam:DeleteRole", &arn)?;
    let account = c.account;
    c.iam.apply(|draft| {
        let role = draft
            .state
            .role(account, name)
            .ok_or_else(|| no_such_role(name))?;
        if !role.record.inline_policies.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete policies first.".into(),
            ));
        }
        if !role.record.attached_policies.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must detach all policies first.".into(),
            ));
        }
        draft.delete_role(account, name);
        Ok(())
    })?;
    c.resource("AWS::IAM::Role", arn);
    Ok(())
}

pub(super) fn update_assume_role_policy(c: &mut Call<'_>) -> Result<(), IamError> {
    let name = c.p.required("RoleName")?;
    check_name(name, "roleName", 64)?;
    let document = c.p.required("PolicyDocument")?;
    check_document_text(document, "policyDocument")?;
    let arn = target_role_arn(&c.iam.snapshot(), c.account, name);
    c.authorize("iam:UpdateAssumeRolePolicy", &arn)?;
    let account = c.account;
    c.iam.apply(|draft| {
        let trust = parse_trust(&draft.state, document, "policyDocument")?;
        let mut role = draft
            .state
            .role(account, name)
            .ok_or_else(|| no_such_role(name))?
            .record
            .clone();
        role.trust_policy = document.to_owned();
        draft.put_role(role, Arc::new(trust))
    })?;
    c.resource("AWS::IAM::Role", arn);
    Ok(())
}
