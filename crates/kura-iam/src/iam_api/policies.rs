//! Managed policies (AWS managed and customer managed), their attachment to users and
//! roles, and inline policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use kura_edge::xml::XmlWriter;
use kura_types::Timestamp;
use serde_json::json;

use super::roles::{no_such_role, target_role_arn};
use super::users::{no_such_user, target_user_arn};
use super::{Call, parse_identity, policy_size};
use crate::IamError;
use crate::managed::{AWS_MANAGED, AWS_MANAGED_PREFIX, AwsManagedPolicy, aws_managed};
use crate::model::{self, PolicyRecord, PolicyVersionRecord, Tag};
use crate::names::{
    check_document_text, check_length, check_name, check_policy_path, fold, invalid,
    parse_entity_arn,
};
use crate::query::{paginate, url_encode_document, write_list, write_paging, write_tags};
use crate::state::{Draft, IamState};

/// `PolicySize`: the largest customer managed policy document, whitespace excluded.
const MANAGED_POLICY_QUOTA: usize = 6144;
/// Managed policies attached to one user or role.
const ATTACHED_POLICIES_QUOTA: usize = 10;

/// Who holds attached and inline policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    User,
    Role,
}

impl Holder {
    fn name_param(self) -> &'static str {
        match self {
            Holder::User => "UserName",
            Holder::Role => "RoleName",
        }
    }

    fn member(self) -> &'static str {
        match self {
            Holder::User => "userName",
            Holder::Role => "roleName",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Holder::User => "User",
            Holder::Role => "Role",
        }
    }

    fn resource_type(self) -> &'static str {
        match self {
            Holder::User => "AWS::IAM::User",
            Holder::Role => "AWS::IAM::Role",
        }
    }

    /// The aggregate size of a holder's inline policies, whitespace excluded.
    fn inline_quota(self) -> usize {
        match self {
            Holder::User => 2048,
            Holder::Role => 10240,
        }
    }

    /// `iam:AttachUserPolicy`, `iam:ListRolePolicies`, … from a verb and a suffix.
    fn action(self, verb: &str, suffix: &str) -> String {
        format!("iam:{verb}{}{suffix}", self.word())
    }

    fn read_name<'a>(self, c: &Call<'a>) -> Result<&'a str, IamError> {
        let name = c.p.required(self.name_param())?;
        let max = match self {
            Holder::User => 128,
            Holder::Role => 64,
        };
        check_name(name, self.member(), max)?;
        Ok(name)
    }

    fn target_arn(self, state: &IamState, account: &str, name: &str) -> String {
        match self {
            Holder::User => target_user_arn(state, account, name),
            Holder::Role => target_role_arn(state, account, name),
        }
    }

    fn not_found(self, name: &str) -> IamError {
        match self {
            Holder::User => no_such_user(name),
            Holder::Role => no_such_role(name),
        }
    }
}

/// A holder's policies, apart from the rest of its record.
struct Holding {
    name: String,
    attached: Vec<String>,
    inline: BTreeMap<String, String>,
}

fn read_holding(
    state: &IamState,
    holder: Holder,
    account: &str,
    name: &str,
) -> Result<Holding, IamError> {
    match holder {
        Holder::User => state.user(account, name).map(|u| Holding {
            name: u.name.clone(),
            attached: u.attached_policies.clone(),
            inline: u.inline_policies.clone(),
        }),
        Holder::Role => state.role(account, name).map(|r| Holding {
            name: r.record.name.clone(),
            attached: r.record.attached_policies.clone(),
            inline: r.record.inline_policies.clone(),
        }),
    }
    .ok_or_else(|| holder.not_found(name))
}

fn write_holding(
    draft: &mut Draft<'_>,
    holder: Holder,
    account: &str,
    holding: Holding,
) -> Result<(), IamError> {
    match holder {
        Holder::User => {
            let mut user = draft
                .state
                .user(account, &holding.name)
                .cloned()
                .ok_or_else(|| holder.not_found(&holding.name))?;
            user.attached_policies = holding.attached;
            user.inline_policies = holding.inline;
            draft.put_user(user)
        }
        Holder::Role => {
            let entry = draft
                .state
                .role(account, &holding.name)
                .cloned()
                .ok_or_else(|| holder.not_found(&holding.name))?;
            let mut record = entry.record;
            record.attached_policies = holding.attached;
            record.inline_policies = holding.inline;
            draft.put_role(record, entry.trust)
        }
    }
}

/// What is shown of a managed policy.
struct PolicyView<'a> {
    name: &'a str,
    policy_id: &'a str,
    arn: String,
    path: &'a str,
    default_version: &'a str,
    attachments: usize,
    description: Option<&'a str>,
    created: Timestamp,
    updated: Timestamp,
    tags: &'a [Tag],
}

impl<'a> PolicyView<'a> {
    fn aws(policy: &'a AwsManagedPolicy, attachments: usize) -> Self {
        let created = Timestamp::from_millis(policy.created_millis);
        Self {
            name: policy.name,
            policy_id: policy.policy_id,
            arn: policy.arn.to_owned(),
            path: "/",
            default_version: "v1",
            attachments,
            description: Some(policy.description),
            created,
            updated: created,
            tags: &[],
        }
    }

    fn customer(policy: &'a PolicyRecord, attachments: usize) -> Self {
        Self {
            name: &policy.name,
            policy_id: &policy.policy_id,
            arn: policy.arn(),
            path: &policy.path,
            default_version: &policy.default_version,
            attachments,
            description: policy.description.as_deref(),
            created: policy.created,
            updated: policy.updated,
            tags: &policy.tags,
        }
    }

    fn write(&self, w: &mut XmlWriter, full: bool) {
        w.leaf("PolicyName", self.name)
            .leaf("PolicyId", self.policy_id)
            .leaf("Arn", &self.arn)
            .leaf("Path", self.path)
            .leaf("DefaultVersionId", self.default_version)
            .leaf("AttachmentCount", &self.attachments.to_string())
            .leaf("PermissionsBoundaryUsageCount", "0")
            .leaf("IsAttachable", "true");
        if full {
            w.optional_leaf("Description", self.description);
        }
        w.leaf("CreateDate", &self.created.iso8601_millis())
            .leaf("UpdateDate", &self.updated.iso8601_millis());
        if full {
            write_tags(w, self.tags);
        }
    }
}

fn read_policy_arn<'a>(c: &Call<'a>) -> Result<&'a str, IamError> {
    let arn = c.p.required("PolicyArn")?;
    check_length(arn, "policyArn", 20, 2048)?;
    if parse_entity_arn(arn).is_none_or(|a| a.kind != "policy") {
        return Err(IamError::InvalidInput(format!("ARN {arn} is not valid.")));
    }
    Ok(arn)
}

fn policy_not_found(arn: &str) -> IamError {
    IamError::NoSuchEntity(format!("Policy {arn} was not found."))
}

fn not_attachable(arn: &str) -> IamError {
    IamError::NoSuchEntity(format!("Policy {arn} does not exist or is not attachable."))
}

pub(super) fn create_policy(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let name = c.p.required("PolicyName")?;
    check_name(name, "policyName", 128)?;
    let path = c.p.get("Path").unwrap_or("/");
    check_policy_path(path, "path")?;
    let document = c.p.required("PolicyDocument")?;
    check_document_text(document, "policyDocument")?;
    let description = c.p.get("Description");
    if let Some(description) = description {
        check_length(description, "description", 0, 1000)?;
    }
    let tags = c.p.tags()?;
    let arn = format!("arn:aws:iam::{}:policy{path}{name}", c.account);
    c.authorize("iam:CreatePolicy", &arn)?;
    let parsed = parse_identity(document)?;
    if policy_size(document) > MANAGED_POLICY_QUOTA {
        return Err(IamError::LimitExceeded(format!(
            "Cannot exceed quota for PolicySize: {MANAGED_POLICY_QUOTA}"
        )));
    }
    let account = c.account;
    let policy = c.iam.apply(|draft| {
        if draft
            .state
            .policies
            .contains_key(&(account.to_owned(), fold(name)))
        {
            return Err(IamError::EntityAlreadyExists(format!(
                "A policy called {name} already exists. Duplicate names are not allowed."
            )));
        }
        let policy = PolicyRecord {
            account: account.to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
            policy_id: model::new_unique_id("ANPA")?,
            description: description.map(str::to_owned),
            created: draft.now,
            updated: draft.now,
            default_version: "v1".to_owned(),
            versions: vec![PolicyVersionRecord {
                version_id: "v1".to_owned(),
                document: document.to_owned(),
                created: draft.now,
            }],
            tags,
        };
        draft.put_policy(policy.clone(), Arc::new(parsed))?;
        Ok(policy)
    })?;
    c.resource("AWS::IAM::Policy", arn);
    c.audit.response_elements = Some(json!({"policy": {
        "policyName": policy.name, "policyId": policy.policy_id, "arn": policy.arn(),
        "path": policy.path, "defaultVersionId": policy.default_version,
        "attachmentCount": 0, "isAttachable": true,
        "createDate": policy.created.iso8601_seconds(),
    }}));
    w.element("Policy", |w| {
        PolicyView::customer(&policy, 0).write(w, true)
    });
    Ok(())
}

pub(super) fn get_policy(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let arn = read_policy_arn(c)?;
    c.authorize("iam:GetPolicy", arn)?;
    let state = c.iam.snapshot();
    let attachments = state.attachment_count(c.account, arn);
    let view = if let Some(policy) = aws_managed(arn) {
        PolicyView::aws(policy, attachments)
    } else {
        let entry = state
            .policy_by_arn(arn)
            .ok_or_else(|| policy_not_found(arn))?;
        PolicyView::customer(&entry.record, attachments)
    };
    c.resource("AWS::IAM::Policy", arn.to_owned());
    w.element("Policy", |w| view.write(w, true));
    Ok(())
}

fn check_version_id(id: &str) -> Result<(), IamError> {
    let shaped = id
        .strip_prefix('v')
        .map(|rest| rest.split_once('.').map_or(rest, |(number, _)| number))
        .is_some_and(|number| {
            !number.is_empty()
                && !number.starts_with('0')
                && number.bytes().all(|b| b.is_ascii_digit())
        });
    if shaped {
        Ok(())
    } else {
        Err(invalid(
            id,
            "versionId",
            "Member must satisfy regular expression pattern: v[1-9][0-9]*(\\.[A-Za-z0-9-]*)?",
        ))
    }
}

pub(super) fn get_policy_version(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let arn = read_policy_arn(c)?;
    let version_id = c.p.required("VersionId")?;
    check_version_id(version_id)?;
    c.authorize("iam:GetPolicyVersion", arn)?;
    let state = c.iam.snapshot();
    let missing = || {
        IamError::NoSuchEntity(format!(
            "Policy {arn} version {version_id} does not exist or is not attachable."
        ))
    };
    let (document, created, is_default) = if let Some(policy) = aws_managed(arn) {
        if version_id != "v1" {
            return Err(missing());
        }
        (
            policy.document.to_owned(),
            Timestamp::from_millis(policy.created_millis),
            true,
        )
    } else {
        let entry = state
            .policy_by_arn(arn)
            .ok_or_else(|| policy_not_found(arn))?;
        let version = entry
            .record
            .versions
            .iter()
            .find(|v| v.version_id == version_id)
            .ok_or_else(missing)?;
        (
            version.document.clone(),
            version.created,
            entry.record.default_version == version_id,
        )
    };
    c.resource("AWS::IAM::Policy", arn.to_owned());
    w.element("PolicyVersion", |w| {
        w.leaf("Document", &url_encode_document(&document))
            .leaf("VersionId", version_id)
            .leaf(
                "IsDefaultVersion",
                if is_default { "true" } else { "false" },
            )
            .leaf("CreateDate", &created.iso8601_millis());
    });
    Ok(())
}

pub(super) fn list_policies(c: &mut Call<'_>, w: &mut XmlWriter) -> Result<(), IamError> {
    let scope = c.p.get("Scope").unwrap_or("All");
    let (aws, local) = match scope {
        "All" => (true, true),
        "AWS" => (true, false),
        "Local" => (false, true),
        other => {
            return Err(invalid(
                other,
                "scope",
                "Member must satisfy enum value set: [All, AWS, Local]",
            ));
        }
    };
    let only_attached = c.p.bool("OnlyAttached")?.unwrap_or(false);
    let prefix = c.p.get("PathPrefix").unwrap_or("/");
    check_policy_path(prefix, "pathPrefix")?;
    if let Some(filter) = c.p.get("PolicyUsageFilter")
        && !matches!(filter, "PermissionsPolicy" | "PermissionsBoundary")
    {
        return Err(invalid(
            filter,
            "policyUsageFilter",
            "Member must satisfy enum value set: [PermissionsPolicy, PermissionsBoundary]",
        ));
    }
    let boundaries_only = c.p.get("PolicyUsageFilter") == Some("PermissionsBoundary");
    let max = c.p.max_items()?;
    c.authorize(
        "iam:ListPolicies",
        &format!("arn:aws:iam::{}:policy/", c.account),
    )?;
    let state = c.iam.snapshot();
    let mut views: Vec<(String, PolicyView<'_>)> = Vec::new();
    if aws {
        for policy in AWS_MANAGED {
            let view = PolicyView::aws(policy, state.attachment_count(c.account, policy.arn));
            views.push((format!("{}\u{1}{}", fold(policy.name), policy.arn), view));
        }
    }
    if local {
        for ((account, folded), entry) in &state.policies {
            if account != c.account {
                continue;
            }
            let arn = entry.record.arn();
            let view = PolicyView::customer(&entry.record, state.attachment_count(c.account, &arn));
            views.push((format!("{folded}\u{1}{arn}"), view));
        }
    }
    views.retain(|(_, v)| {
        v.path.starts_with(prefix) && (!only_attached || v.attachments > 0) && !boundaries_only
    });
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let page = paginate(views, c.p.marker(), max)?;
    write_list(w, "Policies", &page.items, |w, view| view.write(w, false));
    write_paging(w, page.marker.as_deref());
    Ok(())
}

pub(super) fn delete_policy(c: &mut Call<'_>) -> Result<(), IamError> {
    let arn = read_policy_arn(c)?;
    c.authorize("iam:DeletePolicy", arn)?;
    if arn.starts_with(AWS_MANAGED_PREFIX) {
        return Err(IamError::InvalidInput(format!(
            "Policy {arn} is an AWS managed policy and cannot be deleted."
        )));
    }
    let account = c.account;
    c.iam.apply(|draft| {
        let entry = draft
            .state
            .policy_by_arn(arn)
            .ok_or_else(|| policy_not_found(arn))?;
        if draft.state.attachment_count(account, arn) > 0 {
            return Err(IamError::DeleteConflict(
                "Cannot delete a policy attached to entities.".into(),
            ));
        }
        let name = entry.record.name.clone();
        draft.delete_policy(account, &name);
        Ok(())
    })?;
    c.resource("AWS::IAM::Policy", arn.to_owned());
    Ok(())
}

pub(super) fn attach(c: &mut Call<'_>, holder: Holder) -> Result<(), IamError> {
    let name = holder.read_name(c)?;
    let policy_arn = read_policy_arn(c)?;
    let target = holder.target_arn(&c.iam.snapshot(), c.account, name);
    c.iam.authorize(
        c.ctx,
        &holder.action("Attach", "Policy"),
        &target,
        &[("iam:PolicyARN", policy_arn)],
    )?;
    let account = c.account;
    c.iam.apply(|draft| {
        let mut holding = read_holding(&draft.state, holder, account, name)?;
        let attachable = policy_arn.starts_with(AWS_MANAGED_PREFIX)
            || parse_entity_arn(policy_arn).is_some_and(|a| a.account == account);
        if !attachable || draft.state.managed_document(policy_arn).is_none() {
            return Err(not_attachable(policy_arn));
        }
        if holding.attached.iter().any(|a| a == policy_arn) {
            return Ok(());
        }
        if holding.attached.len() >= ATTACHED_POLICIES_QUOTA {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for PoliciesPer{}: {ATTACHED_POLICIES_QUOTA}",
                holder.word()
            )));
        }
        holding.attached.push(policy_arn.to_owned());
        write_holding(draft, holder, account, holding)
    })?;
    c.resource(holder.resource_type(), target);
    c.resource("AWS::IAM::Policy", policy_arn.to_owned());
    Ok(())
}

pub(super) fn detach(c: &mut Call<'_>, holder: Holder) -> Result<(), IamError> {
    let name = holder.read_name(c)?;
    let policy_arn = read_policy_arn(c)?;
    let target = holder.target_arn(&c.iam.snapshot(), c.account, name);
    c.iam.authorize(
        c.ctx,
        &holder.action("Detach", "Policy"),
        &target,
        &[("iam:PolicyARN", policy_arn)],
    )?;
    let account = c.account;
    c.iam.apply(|draft| {
        let mut holding = read_holding(&draft.state, holder, account, name)?;
        let before = holding.attached.len();
        holding.attached.retain(|a| a != policy_arn);
        if holding.attached.len() == before {
            return Err(policy_not_found(policy_arn));
        }
        write_holding(draft, holder, account, holding)
    })?;
    c.resource(holder.resource_type(), target);
    c.resource("AWS::IAM::Policy", policy_arn.to_owned());
    Ok(())
}

pub(super) fn list_attached(
    c: &mut Call<'_>,
    holder: Holder,
    w: &mut XmlWriter,
) -> Result<(), IamError> {
    let name = holder.read_name(c)?;
    let prefix = c.p.get("PathPrefix").unwrap_or("/");
    check_policy_path(prefix, "pathPrefix")?;
    let max = c.p.max_items()?;
    let state = c.iam.snapshot();
    let target = holder.target_arn(&state, c.account, name);
    c.authorize(&holder.action("ListAttached", "Policies"), &target)?;
    let holding = read_holding(&state, holder, c.account, name)?;
    let items: Vec<(String, (String, String))> = holding
        .attached
        .iter()
        .enumerate()
        .filter_map(|(index, arn)| {
            let parsed = parse_entity_arn(arn)?;
            parsed
                .path
                .starts_with(prefix)
                .then(|| (format!("{index:06}"), (parsed.name.to_owned(), arn.clone())))
        })
        .collect();
    let page = paginate(items, c.p.marker(), max)?;
    write_list(w, "AttachedPolicies", &page.items, |w, (name, arn)| {
        w.leaf("PolicyName", name).leaf("PolicyArn", arn);
    });
    write_paging(w, page.marker.as_deref());
    Ok(())
}

fn read_inline_name<'a>(c: &Call<'a>) -> Result<&'a str, IamError> {
    let name = c.p.required("PolicyName")?;
    check_name(name, "policyName", 128)?;
    Ok(name)
}

fn no_such_inline(holder: Holder, name: &str) -> IamError {
    IamError::NoSuchEntity(format!(
        "The {} policy with name {name} cannot be found.",
        holder.word().to_ascii_lowercase()
    ))
}

pub(super) fn put_inline(c: &mut Call<'_>, holder: Holder) -> Result<(), IamError> {
    let name = holder.read_name(c)?;
    let policy_name = read_inline_name(c)?;
    let document = c.p.required("PolicyDocument")?;
    check_document_text(document, "policyDocument")?;
    let target = holder.target_arn(&c.iam.snapshot(), c.account, name);
    c.authorize(&holder.action("Put", "Policy"), &target)?;
    parse_identity(document)?;
    let account = c.account;
    c.iam.apply(|draft| {
        let mut holding = read_holding(&draft.state, holder, account, name)?;
        holding
            .inline
            .insert(policy_name.to_owned(), document.to_owned());
        let total: usize = holding.inline.values().map(|d| policy_size(d)).sum();
        if total > holder.inline_quota() {
            return Err(IamError::LimitExceeded(format!(
                "Maximum policy size of {} bytes exceeded for {} {}",
                holder.inline_quota(),
                holder.word().to_ascii_lowercase(),
                holding.name
            )));
        }
        write_holding(draft, holder, account, holding)
    })?;
    c.resource(holder.resource_type(), target);
    Ok(())
}

pub(super) fn get_inline(
    c: &mut Call<'_>,
    holder: Holder,
    w: &mut XmlWriter,
) -> Result<(), IamError> {
    let name = holder.read_name(c)?;
    let policy_name = read_inline_name(c)?;
    let state = c.iam.snapshot();
    let target = holder.target_arn(&state, c.account, name);
    c.authorize(&holder.action("Get", "Policy"), &target)?;
    let holding = read_holding(&state, holder, c.account, name)?;
    let document = holding
        .inline
        .get(policy_name)
        .ok_or_else(|| no_such_inline(holder, policy_name))?;
    c.resource(holder.resource_type(), target);
    w.leaf(holder.name_param(), &holding.name)
        .leaf("PolicyName", policy_name)
        .leaf("PolicyDocument", &url_encode_document(document));
    Ok(())
}

pub(super) fn delete_inline(c: &mut Call<'_>, holder: Holder) -> Result<(), IamError> {
    let name = holder.read_name(c)?;
    let policy_name = read_inline_name(c)?;
    let target = holder.target_arn(&c.iam.snapshot(), c.account, name);
    c.authorize(&holder.action("Delete", "Policy"), &target)?;
    let account = c.account;
    c.iam.apply(|draft| {
        let mut holding = read_holding(&draft.state, holder, account, name)?;
        if holding.inline.remove(policy_name).is_none() {
            return Err(no_such_inline(holder, policy_name));
        }
        write_holding(draft, holder, account, holding)
    })?;
    c.resource(holder.resource_type(), target);
    Ok(())
}

pub(super) fn list_inline(
    c: &mut Call<'_>,
    holder: Holder,
    w: &mut XmlWriter,
) -> Result<(), IamError> {
    let name = holder.read_name(c)?;
    let max = c.p.max_items()?;
    let state = c.iam.snapshot();
    let target = holder.target_arn(&state, c.account, name);
    c.authorize(&holder.action("List", "Policies"), &target)?;
    let holding = read_holding(&state, holder, c.account, name)?;
    let names: Vec<(String, String)> = holding
        .inline
        .keys()
        .map(|n| (n.clone(), n.clone()))
        .collect();
    let page = paginate(names, c.p.marker(), max)?;
    w.element("PolicyNames", |w| {
        for name in &page.items {
            w.leaf("member", name);
        }
    });
    write_paging(w, page.marker.as_deref());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids() {
        assert!(check_version_id("v1").is_ok());
        assert!(check_version_id("v12").is_ok());
        assert!(check_version_id("v0").is_err());
        assert!(check_version_id("1").is_err());
        assert!(check_version_id("v").is_err());
    }

    #[test]
    fn holder_actions() {
        assert_eq!(
            Holder::User.action("Attach", "Policy"),
            "iam:AttachUserPolicy"
        );
        assert_eq!(
            Holder::Role.action("ListAttached", "Policies"),
            "iam:ListAttachedRolePolicies"
        );
    }
}
