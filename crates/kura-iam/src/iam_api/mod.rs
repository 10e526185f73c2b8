//! The IAM API (AWS Query protocol, version 2010-05-08), as [`IamService`] serves it on
//! the edge.
//!
//! Every action runs the same way: read and validate the parameters → authorize the
//! caller on the target's ARN (identity policies, own account only) → check and change
//! the state through [`Iam::apply`] → render the `<ActionResult>` XML.

mod policies;
mod roles;
mod users;

use std::sync::Arc;

use async_trait::async_trait;
use kura_edge::xml::XmlWriter;
use kura_edge::{ApiError, AuditDetails, AuditResource, QueryParams, QueryService, RequestContext};
use kura_policy::PrincipalKind;

use crate::error::Api;
use crate::query::{Params, audit_parameters};
use crate::{Iam, IamError};

/// The IAM Query API over an [`Iam`].
pub struct IamService {
    iam: Arc<Iam>,
}

impl IamService {
    pub fn new(iam: Arc<Iam>) -> Self {
        Self { iam }
    }
}

#[async_trait]
impl QueryService for IamService {
    fn signing_name(&self) -> &'static str {
        "iam"
    }

    fn event_source(&self) -> &'static str {
        "iam.amazonaws.com"
    }

    fn xml_namespace(&self) -> &'static str {
        "https://iam.amazonaws.com/doc/2010-05-08/"
    }

    fn is_global(&self) -> bool {
        true
    }

    async fn call(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &QueryParams,
        audit: &mut AuditDetails,
    ) -> Result<String, ApiError> {
        self.iam
            .invoke_iam(ctx, action, params, audit)
            .map_err(|e| e.into_api_error(Api::Iam))
    }
}

/// The IAM actions kura serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    CreateUser,
    GetUser,
    ListUsers,
    DeleteUser,
    CreateAccessKey,
    ListAccessKeys,
    DeleteAccessKey,
    UpdateAccessKey,
    CreateRole,
    GetRole,
    ListRoles,
    DeleteRole,
    UpdateAssumeRolePolicy,
    CreatePolicy,
    GetPolicy,
    GetPolicyVersion,
    ListPolicies,
    DeletePolicy,
    AttachUserPolicy,
    DetachUserPolicy,
    AttachRolePolicy,
    DetachRolePolicy,
    ListAttachedUserPolicies,
    ListAttachedRolePolicies,
    PutUserPolicy,
    GetUserPolicy,
    DeleteUserPolicy,
    ListUserPolicies,
    PutRolePolicy,
    GetRolePolicy,
    DeleteRolePolicy,
    ListRolePolicies,
}

const ACTIONS: &[(&str, Action)] = &[
    ("CreateUser", Action::CreateUser),
    ("GetUser", Action::GetUser),
    ("ListUsers", Action::ListUsers),
    ("DeleteUser", Action::DeleteUser),
    ("CreateAccessKey", Action::CreateAccessKey),
    ("ListAccessKeys", Action::ListAccessKeys),
    ("DeleteAccessKey", Action::DeleteAccessKey),
    ("UpdateAccessKey", Action::UpdateAccessKey),
    ("CreateRole", Action::CreateRole),
    ("GetRole", Action::GetRole),
    ("ListRoles", Action::ListRoles),
    ("DeleteRole", Action::DeleteRole),
    ("UpdateAssumeRolePolicy", Action::UpdateAssumeRolePolicy),
    ("CreatePolicy", Action::CreatePolicy),
    ("GetPolicy", Action::GetPolicy),
    ("GetPolicyVersion", Action::GetPolicyVersion),
    ("ListPolicies", Action::ListPolicies),
    ("DeletePolicy", Action::DeletePolicy),
    ("AttachUserPolicy", Action::AttachUserPolicy),
    ("DetachUserPolicy", Action::DetachUserPolicy),
    ("AttachRolePolicy", Action::AttachRolePolicy),
    ("DetachRolePolicy", Action::DetachRolePolicy),
    ("ListAttachedUserPolicies", Action::ListAttachedUserPolicies),
    ("ListAttachedRolePolicies", Action::ListAttachedRolePolicies),
    ("PutUserPolicy", Action::PutUserPolicy),
    ("GetUserPolicy", Action::GetUserPolicy),
    ("DeleteUserPolicy", Action::DeleteUserPolicy),
    ("ListUserPolicies", Action::ListUserPolicies),
    ("PutRolePolicy", Action::PutRolePolicy),
    ("GetRolePolicy", Action::GetRolePolicy),
    ("DeleteRolePolicy", Action::DeleteRolePolicy),
    ("ListRolePolicies", Action::ListRolePolicies),
];

fn lookup(name: &str) -> Result<Action, IamError> {
    ACTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .ok_or_else(|| IamError::InvalidAction(name.to_owned()))
}

fn is_read_only(name: &str) -> bool {
    name.starts_with("Get") || name.starts_with("List")
}

/// One IAM call in progress.
pub(crate) struct Call<'a> {
    pub iam: &'a Iam,
    pub ctx: &'a RequestContext,
    pub p: Params<'a>,
    pub audit: &'a mut AuditDetails,
    /// The caller's account: every IAM action acts inside it.
    pub account: &'a str,
}

impl Call<'_> {
    /// Authorizes `iam:<action>` on `resource`.
    pub fn authorize(&self, action: &str, resource: &str) -> Result<(), IamError> {
        self.iam.authorize(self.ctx, action, resource, &[])
    }

    /// The user a call is about: `UserName`, or the calling user when it is omitted.
    pub fn user_name_or_caller(&self) -> Result<String, IamError> {
        match self.p.get("UserName") {
            Some(name) => {
                crate::names::check_name(name, "userName", 128)?;
                Ok(name.to_owned())
            }
            None => match (
                &self.ctx.caller.principal.kind,
                &self.ctx.caller.principal.username,
            ) {
                (PrincipalKind::User, Some(name)) => Ok(name.clone()),
                _ => Err(IamError::Validation(
                    "Must specify userName when calling with non-User credentials".into(),
                )),
            },
        }
    }

    pub fn resource(&mut self, resource_type: &str, arn: String) {
        self.audit.resources.push(AuditResource {
            account_id: self.account.to_owned(),
            resource_type: resource_type.to_owned(),
            arn,
        });
    }
}

impl Iam {
    /// Runs one IAM action and returns the inner XML of its result element.
    pub(crate) fn invoke_iam(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &QueryParams,
        audit: &mut AuditDetails,
    ) -> Result<String, IamError> {
        let op = lookup(action)?;
        audit.read_only = Some(is_read_only(action));
        audit.request_parameters = audit_parameters(params, &[]);
        let mut call = Call {
            iam: self,
            ctx,
            p: Params::new(params),
            audit,
            account: &ctx.caller.principal.account,
        };
        let mut w = XmlWriter::new();
        let c = &mut call;
        match op {
            Action::CreateUser => users::create_user(c, &mut w)?,
            Action::GetUser => users::get_user(c, &mut w)?,
            Action::ListUsers => users::list_users(c, &mut w)?,
            Action::DeleteUser => users::delete_user(c)?,
            Action::CreateAccessKey => users::create_access_key(c, &mut w)?,
            Action::ListAccessKeys => users::list_access_keys(c, &mut w)?,
            Action::DeleteAccessKey => users::delete_access_key(c)?,
            Action::UpdateAccessKey => users::update_access_key(c)?,
            Action::CreateRole => roles::create_role(c, &mut w)?,
            Action::GetRole => roles::get_role(c, &mut w)?,
            Action::ListRoles => roles::list_roles(c, &mut w)?,
            Action::DeleteRole => roles::delete_role(c)?,
            Action::UpdateAssumeRolePolicy => roles::update_assume_role_policy(c)?,
            Action::CreatePolicy => policies::create_policy(c, &mut w)?,
            Action::GetPolicy => policies::get_policy(c, &mut w)?,
            Action::GetPolicyVersion => policies::get_policy_version(c, &mut w)?,
            Action::ListPolicies => policies::list_policies(c, &mut w)?,
            Action::DeletePolicy => policies::delete_policy(c)?,
            Action::AttachUserPolicy => policies::attach(c, policies::Holder::User)?,
            Action::DetachUserPolicy => policies::detach(c, policies::Holder::User)?,
            Action::AttachRolePolicy => policies::attach(c, policies::Holder::Role)?,
            Action::DetachRolePolicy => policies::detach(c, policies::Holder::Role)?,
            Action::ListAttachedUserPolicies => {
                policies::list_attached(c, policies::Holder::User, &mut w)?
            }
            Action::ListAttachedRolePolicies => {
                policies::list_attached(c, policies::Holder::Role, &mut w)?
            }
            Action::PutUserPolicy => policies::put_inline(c, policies::Holder::User)?,
            Action::GetUserPolicy => policies::get_inline(c, policies::Holder::User, &mut w)?,
            Action::DeleteUserPolicy => policies::delete_inline(c, policies::Holder::User)?,
            Action::ListUserPolicies => policies::list_inline(c, policies::Holder::User, &mut w)?,
            Action::PutRolePolicy => policies::put_inline(c, policies::Holder::Role)?,
            Action::GetRolePolicy => policies::get_inline(c, policies::Holder::Role, &mut w)?,
            Action::DeleteRolePolicy => policies::delete_inline(c, policies::Holder::Role)?,
            Action::ListRolePolicies => policies::list_inline(c, policies::Holder::Role, &mut w)?,
        }
        Ok(w.finish())
    }
}

/// Policy documents: the length AWS's quotas count, whitespace excluded.
pub(crate) fn policy_size(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

/// Parses an identity policy, or says why not as `MalformedPolicyDocument`.
pub(crate) fn parse_identity(document: &str) -> Result<kura_policy::PolicyDocument, IamError> {
    crate::names::check_document_text(document, "policyDocument")?;
    crate::authz::parse_identity_policy(document)
        .map_err(|e| IamError::MalformedPolicyDocument(e.to_string()))
}

/// Refuses features kura does not implement rather than ignoring them silently.
pub(crate) fn refuse_permissions_boundary(p: &Params<'_>) -> Result<(), IamError> {
    if p.has("PermissionsBoundary") {
        return Err(IamError::InvalidInput(
            "Permissions boundaries are not supported by this server.".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_is_listed_once() {
        for (name, action) in ACTIONS {
            assert_eq!(lookup(name).ok(), Some(*action));
            assert_eq!(format!("{action:?}"), *name);
        }
        assert!(lookup("CreateGroup").is_err());
        assert!(is_read_only("ListUsers") && !is_read_only("CreateUser"));
    }
}
