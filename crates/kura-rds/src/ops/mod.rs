//! The RDS actions: dispatch, authorization and what the families share.

mod clusters;
mod instances;
mod misc;
pub(crate) mod snapshots;

use kura_edge::xml::XmlWriter;
use kura_edge::{AuditDetails, AuditResource, QueryParams, RequestContext};
use kura_policy::AuthzRequest;

use crate::Rds;
use crate::error::{RdsError, RdsResult};
use crate::params::Params;

/// Runs one action and returns the inner XML of its result element.
pub(crate) async fn dispatch(
    rds: &std::sync::Arc<Rds>,
    ctx: &RequestContext,
    action: &str,
    params: &QueryParams,
    audit: &mut AuditDetails,
) -> RdsResult<String> {
    let p = Params(params);
    audit.request_parameters = Some(request_parameters(params));
    audit.read_only = Some(action.starts_with("Describe") || action.starts_with("List"));
    let call = Call { rds, ctx };
    use crate::model::SnapshotKind::{Cluster, Instance};
    match action {
        "CreateDBCluster" => call.create_db_cluster(&p, audit).await,
        "DescribeDBClusters" => call.describe_db_clusters(&p),
        "ModifyDBCluster" => call.modify_db_cluster(&p, audit).await,
        "DeleteDBCluster" => call.delete_db_cluster(&p, audit).await,
        "StopDBCluster" => call.stop_db_cluster(&p, audit).await,
        "StartDBCluster" => call.start_db_cluster(&p, audit).await,
        "CreateDBInstance" => call.create_db_instance(&p, audit).await,
        "DescribeDBInstances" => call.describe_db_instances(&p),
        "ModifyDBInstance" => call.modify_db_instance(&p, audit).await,
        "DeleteDBInstance" => call.delete_db_instance(&p, audit).await,
        "RebootDBInstance" => call.reboot_db_instance(&p, audit).await,
        "StopDBInstance" => call.stop_db_instance(&p, audit).await,
        "StartDBInstance" => call.start_db_instance(&p, audit).await,
        "AddTagsToResource" => call.add_tags(&p),
        "RemoveTagsFromResource" => call.remove_tags(&p),
        "ListTagsForResource" => call.list_tags(&p),
        "DescribeEvents" => call.describe_events(&p),
        "CreateDBSnapshot" => call.create_snapshot(Instance, &p, audit).await,
        "CreateDBClusterSnapshot" => call.create_snapshot(Cluster, &p, audit).await,
        "DescribeDBSnapshots" => call.describe_snapshots(Instance, &p),
        "DescribeDBClusterSnapshots" => call.describe_snapshots(Cluster, &p),
        "DeleteDBSnapshot" => call.delete_snapshot(Instance, &p, audit).await,
        "DeleteDBClusterSnapshot" => call.delete_snapshot(Cluster, &p, audit).await,
        "CopyDBSnapshot" => call.copy_snapshot(Instance, &p, audit).await,
        "CopyDBClusterSnapshot" => call.copy_snapshot(Cluster, &p, audit).await,
        "ModifyDBSnapshotAttribute" => call.modify_snapshot_attribute(Instance, &p, audit).await,
        "ModifyDBClusterSnapshotAttribute" => {
            call.modify_snapshot_attribute(Cluster, &p, audit).await
        }
        "DescribeDBSnapshotAttributes" => call.describe_snapshot_attributes(Instance, &p, audit),
        "DescribeDBClusterSnapshotAttributes" => {
            call.describe_snapshot_attributes(Cluster, &p, audit)
        }
        "RestoreDBInstanceFromDBSnapshot" => call.restore_instance_from_snapshot(&p, audit).await,
        "RestoreDBClusterFromSnapshot" => call.restore_cluster_from_snapshot(&p, audit).await,
        other => Err(RdsError::InvalidAction(other.to_owned())),
    }
}

/// One action in progress.
pub(crate) struct Call<'a> {
    pub rds: &'a std::sync::Arc<Rds>,
    pub ctx: &'a RequestContext,
}

impl Call<'_> {
    pub fn account(&self) -> &str {
        &self.ctx.caller.principal.account
    }

    /// Identity-policy authorization of an RDS action on a resource ARN, with the global
    /// condition keys every request carries.
    pub fn authorize(&self, action: &str, resource: &str) -> RdsResult<()> {
        let principal = &self.ctx.caller.principal;
        let context = kura_iam::base_context(self.ctx);
        let request = AuthzRequest {
            principal,
            action,
            resource,
            context: &context,
        };
        let policies = self.rds.iam.identity_policies(principal);
        kura_iam::authorize_identity(&policies, &request).map_err(RdsError::AccessDenied)
    }

    pub fn arn(&self, kind: &str, id: &str) -> String {
        format!(
            "arn:aws:rds:{}:{}:{kind}:{id}",
            self.rds.region,
            self.account()
        )
    }
}

/// Accepts an identifier or the ARN of a resource of the caller's account; returns the id.
pub(crate) fn identifier_from(value: &str, kind: &str) -> String {
    value
        .rsplit_once(&format!(":{kind}:"))
        .map_or(value, |(_, id)| id)
        .to_ascii_lowercase()
}

pub(crate) fn add_resource(audit: &mut AuditDetails, account: &str, kind: &str, arn: &str) {
    audit.resources.push(AuditResource {
        account_id: account.to_owned(),
        resource_type: kind.to_owned(),
        arn: arn.to_owned(),
    });
}

/// `MaxRecords` (20-100, default 100) and `Marker` paging over items in key order.
pub(crate) fn page<T>(
    p: &Params<'_>,
    items: Vec<T>,
    key: impl Fn(&T) -> String,
) -> RdsResult<(Vec<T>, Option<String>)> {
    let max = p.int("MaxRecords")?.unwrap_or(100);
    if !(20..=100).contains(&max) {
        return Err(RdsError::InvalidParameterValue(format!(
            "Invalid value {max} for MaxRecords. Must be between 20 and 100"
        )));
    }
    let after = p.string("Marker").map(str::to_owned);
    let mut remaining: Vec<T> = items
        .into_iter()
        .filter(|item| after.as_ref().is_none_or(|a| key(item) > *a))
        .collect();
    let limit = usize::try_from(max).unwrap_or(100);
    let marker = (remaining.len() > limit)
        .then(|| remaining.get(limit - 1).map(&key))
        .flatten();
    remaining.truncate(limit);
    Ok((remaining, marker))
}

/// A Describe call's result: one [`page`] of `items` (in `key` order), each rendered
/// inside the `list` element, then the `Marker` of the next page if there is one.
pub(crate) fn render_page<T>(
    p: &Params<'_>,
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    list: &str,
    render: impl Fn(&mut XmlWriter, &T),
) -> RdsResult<String> {
    let (items, next) = page(p, items, key)?;
    let mut w = XmlWriter::new();
    w.element(list, |w| {
        for item in &items {
            render(w, item);
        }
    });
    w.optional_leaf("Marker", next.as_deref());
    Ok(w.finish())
}

/// Parameters as CloudTrail shows them: the request's members, without secrets.
fn request_parameters(params: &QueryParams) -> serde_json::Value {
    let mut shown = serde_json::Map::new();
    for (name, value) in &params.0 {
        if matches!(name.as_str(), "Action" | "Version") || name.contains("Password") {
            continue;
        }
        let mut chars = name.chars();
        let camel: String = chars
            .next()
            .map(|c| c.to_lowercase().chain(chars).collect())
            .unwrap_or_default();
        shown.insert(camel, serde_json::Value::String(value.clone()));
    }
    serde_json::Value::Object(shown)
}

/// Filters that match on one string field of a record.
pub(crate) fn matches_filters(
    filters: &[(String, Vec<String>)],
    field: impl Fn(&str) -> Option<String>,
) -> RdsResult<bool> {
    for (name, values) in filters {
        let Some(actual) = field(name) else {
            return Err(RdsError::InvalidParameterValue(format!(
                "Unrecognized filter name: {name}"
            )));
        };
        if !values.iter().any(|v| v.eq_ignore_ascii_case(&actual)) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    fn describe(pairs: &[(&str, &str)], items: &[&str]) -> RdsResult<String> {
        let q = QueryParams::from_pairs(pairs);
        render_page(
            &Params(&q),
            items.to_vec(),
            |item| (*item).to_owned(),
            "Items",
            |w, item| {
                w.leaf("Item", item);
            },
        )
    }

    #[test]
    fn pages_follow_the_marker_until_the_last() {
        let names: Vec<String> = (0..45).map(|i| format!("db-{i:02}")).collect();
        let items: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut seen = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut pairs = vec![("MaxRecords", "20")];
            if let Some(m) = &marker {
                pairs.push(("Marker", m));
            }
            let xml = describe(&pairs, &items).expect("a valid page");
            let page: Vec<String> = xml
                .split("<Item>")
                .skip(1)
                .filter_map(|rest| rest.split_once("</Item>").map(|(v, _)| v.to_owned()))
                .collect();
            assert!(page.len() <= 20, "{xml}");
            seen.extend(page);
            marker = xml
                .split_once("<Marker>")
                .and_then(|(_, rest)| rest.split_once("</Marker>"))
                .map(|(m, _)| m.to_owned());
            if marker.is_none() {
                break;
            }
        }
        assert_eq!(seen, names);
    }

    #[test]
    fn max_records_outside_20_to_100_is_refused() {
        for bad in ["19", "101", "x"] {
            assert!(describe(&[("MaxRecords", bad)], &["a"]).is_err(), "{bad}");
        }
        let all = describe(&[], &["a", "b"]).expect("default page");
        assert!(
            all.contains("<Items><Item>a</Item><Item>b</Item></Items>"),
            "{all}"
        );
        assert!(!all.contains("<Marker>"), "{all}");
    }
}
