//! Tags: TagResource, UntagResource, ListResourceTags.

use serde::Serialize;

use super::{Call, Empty, check_paging, paginate};
use crate::error::{KmsError, KmsResult};
use crate::operation::Operation;
use crate::resolve::Aliases;
use crate::validate::Validator;
use crate::wire::{KeyRequest, Page, Tag};

/// Tags a key may carry.
const MAX_TAGS: usize = 50;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TagList {
    tags: Vec<Tag>,
}

impl Call<'_> {
    pub fn tag_resource(&mut self, request: KeyRequest) -> KmsResult<Empty> {
        let mut v = Validator::new();
        v.required("tags", &request.tags);
        if let Some(tags) = &request.tags {
            validate_tags(&mut v, tags);
        }
        let op = Operation::TagResource;
        let key = self.required_target(op, &request.key_id, Aliases::Refused, v)?;
        let tags = request.tags.unwrap_or_default();
        self.update_key(&key, op, |record| {
            let untouched = record
                .tags
                .keys()
                .filter(|existing| !tags.iter().any(|t| &t.tag_key == *existing))
                .count();
            check_tag_rules(&tags, untouched)?;
            for tag in tags {
                record.tags.insert(tag.tag_key, tag.tag_value);
            }
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub fn untag_resource(&mut self, request: KeyRequest) -> KmsResult<Empty> {
        let mut v = Validator::new();
        v.required("tagKeys", &request.tag_keys);
        for key in request.tag_keys.iter().flatten() {
            v.length("tagKeys", Some(key), 1, 128);
        }
        let op = Operation::UntagResource;
        let key = self.required_target(op, &request.key_id, Aliases::Refused, v)?;
        let keys = request.tag_keys.unwrap_or_default();
        self.update_key(&key, op, |record| {
            for key in &keys {
                record.tags.remove(key);
            }
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub fn list_resource_tags(&mut self, request: KeyRequest) -> KmsResult<Page<TagList>> {
        let mut v = Validator::new();
        check_paging(&mut v, request.limit, request.marker.as_deref());
        let key = self.required_target(
            Operation::ListResourceTags,
            &request.key_id,
            Aliases::Refused,
            v,
        )?;
        let tags: Vec<Tag> = key
            .record
            .tags
            .iter()
            .map(|(k, v)| Tag {
                tag_key: k.clone(),
                tag_value: v.clone(),
            })
            .collect();
        paginate(
            tags,
            |t| t.tag_key.clone(),
            request.limit,
            request.marker.as_deref(),
            |tags| TagList { tags },
        )
    }
}

/// Length constraints of the `Tags` member.
pub(crate) fn validate_tags(v: &mut Validator, tags: &[Tag]) {
    for tag in tags {
        v.length("tags.member.tagKey", Some(&tag.tag_key), 1, 128);
        v.length("tags.member.tagValue", Some(&tag.tag_value), 0, 256);
    }
}

/// AWS's tag rules, checked against a key that already has `existing` other tags.
pub(crate) fn check_tag_rules(tags: &[Tag], existing: usize) -> KmsResult<()> {
    let mut seen = std::collections::BTreeSet::new();
    for tag in tags {
        if tag.tag_key.starts_with("aws:") {
            return Err(KmsError::Tag(
                "Tags beginning with aws: are reserved".into(),
            ));
        }
        if !seen.insert(tag.tag_key.as_str()) {
            return Err(KmsError::Tag("Duplicate tag keys".into()));
        }
    }
    if existing + seen.len() > MAX_TAGS {
        return Err(KmsError::Tag(format!(
            "Too many tags: a key can have at most {MAX_TAGS}"
        )));
    }
    Ok(())
}
