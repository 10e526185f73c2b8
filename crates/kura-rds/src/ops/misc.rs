//! Tags (AddTagsToResource, RemoveTagsFromResource, ListTagsForResource) and
//! DescribeEvents.

use kura_edge::xml::XmlWriter;

use super::{Call, render_page};
use crate::error::{RdsError, RdsResult};
use crate::params::Params;
use crate::render;

/// Which record a tagging ARN names.
enum Tagged {
    Cluster(String),
    Instance(String),
}

impl Call<'_> {
    fn tagged(&self, arn: &str) -> RdsResult<Tagged> {
        let prefix = format!("arn:aws:rds:{}:{}:", self.rds.region, self.account());
        let resource = arn.strip_prefix(&prefix).ok_or_else(|| {
            RdsError::InvalidParameterValue(format!(
                "The specified resource name does not match an RDS resource in this region: {arn}"
            ))
        })?;
        match resource.split_once(':') {
            Some(("cluster", id)) => Ok(Tagged::Cluster(id.to_owned())),
            Some(("db", id)) => Ok(Tagged::Instance(id.to_owned())),
            _ => Err(RdsError::InvalidParameterValue(format!(
                "Unsupported resource for tagging: {arn}"
            ))),
        }
    }

    fn change_tags(
        &self,
        arn: &str,
        change: impl FnOnce(&mut Vec<(String, String)>),
    ) -> RdsResult<()> {
        match self.tagged(arn)? {
            Tagged::Cluster(id) => self
                .rds
                .state
                .update_cluster(self.account(), &id, |c| {
                    change(&mut c.tags);
                    Ok(())
                })
                .map(|_| ()),
            Tagged::Instance(id) => self
                .rds
                .state
                .update_instance(self.account(), &id, |i| {
                    change(&mut i.tags);
                    Ok(())
                })
                .map(|_| ()),
        }
    }

    pub fn add_tags(&self, p: &Params<'_>) -> RdsResult<String> {
        let arn = p.required("ResourceName")?.to_owned();
        self.authorize("rds:AddTagsToResource", &arn)?;
        let new_tags = p.tags("Tags");
        if new_tags.iter().any(|(k, _)| k.starts_with("aws:")) {
            return Err(RdsError::InvalidParameterValue(
                "Tag keys beginning with aws: are reserved.".into(),
            ));
        }
        self.change_tags(&arn, |tags| {
            for (key, value) in new_tags {
                tags.retain(|(k, _)| *k != key);
                tags.push((key, value));
            }
        })?;
        Ok(String::new())
    }

    pub fn remove_tags(&self, p: &Params<'_>) -> RdsResult<String> {
        let arn = p.required("ResourceName")?.to_owned();
        self.authorize("rds:RemoveTagsFromResource", &arn)?;
        let keys = p.list("TagKeys");
        self.change_tags(&arn, |tags| tags.retain(|(k, _)| !keys.contains(k)))?;
        Ok(String::new())
    }

    pub fn list_tags(&self, p: &Params<'_>) -> RdsResult<String> {
        let arn = p.required("ResourceName")?.to_owned();
        self.authorize("rds:ListTagsForResource", &arn)?;
        let tags = match self.tagged(&arn)? {
            Tagged::Cluster(id) => {
                self.rds
                    .state
                    .cluster(self.account(), &id)
                    .ok_or(RdsError::ClusterNotFound(id))?
                    .tags
            }
            Tagged::Instance(id) => {
                self.rds
                    .state
                    .instance(self.account(), &id)
                    .ok_or(RdsError::InstanceNotFound(id))?
                    .tags
            }
        };
        let mut w = XmlWriter::new();
        render::tags(&mut w, &tags);
        Ok(w.finish())
    }

    pub fn describe_events(&self, p: &Params<'_>) -> RdsResult<String> {
        self.authorize("rds:DescribeEvents", "*")?;
        let source = p.string("SourceIdentifier").map(str::to_ascii_lowercase);
        let source_type = p.string("SourceType");
        let since = match p.int("Duration")? {
            Some(minutes) => self.ctx.time.plus_millis(-minutes.saturating_mul(60_000)),
            None => self.ctx.time.plus_millis(-3_600_000),
        };
        let events: Vec<_> = self
            .rds
            .state
            .events_of(self.account())?
            .into_iter()
            .filter(|e| source.as_ref().is_none_or(|s| *s == e.source_identifier))
            .filter(|e| source_type.is_none_or(|t| t == e.source_type))
            .filter(|e| e.date >= since)
            .collect();
        render_page(
            p,
            events,
            |e| format!("{:020}", e.date.millis()),
            "Events",
            render::event,
        )
    }
}
