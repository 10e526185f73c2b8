//! Reading AWS Query parameters: scalars, booleans, integers, lists (`Name.member.N` or
//! `Name.<LocationName>.N`), tags and filters.

use kura_edge::QueryParams;

use crate::error::{RdsError, RdsResult};

pub(crate) struct Params<'a>(pub &'a QueryParams);

impl Params<'_> {
    pub fn string(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    pub fn required(&self, name: &str) -> RdsResult<&str> {
        self.string(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| RdsError::MissingParameter(name.to_owned()))
    }

    pub fn bool(&self, name: &str) -> RdsResult<Option<bool>> {
        match self.string(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(RdsError::InvalidParameterValue(format!(
                "Invalid boolean value '{v}' for parameter {name}."
            ))),
        }
    }

    pub fn int(&self, name: &str) -> RdsResult<Option<i64>> {
        self.string(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    RdsError::InvalidParameterValue(format!(
                        "Invalid integer value '{v}' for parameter {name}."
                    ))
                })
            })
            .transpose()
    }

    /// List members in order: `Name.member.1`, `Name.<anything>.1`, ...
    pub fn list(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.");
        let mut items: Vec<(u32, String)> = self
            .0
            .0
            .iter()
            .filter_map(|(key, value)| {
                let rest = key.strip_prefix(&prefix)?;
                let (_, index) = rest.rsplit_once('.')?;
                Some((index.parse().ok()?, value.clone()))
            })
            .collect();
        items.sort_by_key(|(index, _)| *index);
        items.into_iter().map(|(_, value)| value).collect()
    }

    /// `Tags.Tag.N.Key` / `Tags.member.N.Key` pairs, in order.
    pub fn tags(&self, name: &str) -> Vec<(String, String)> {
        let prefix = format!("{name}.");
        let mut entries: std::collections::BTreeMap<u32, (String, String)> = Default::default();
        for (key, value) in &self.0.0 {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let mut parts = rest.split('.');
            let (Some(_), Some(index), Some(field)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(index) = index.parse::<u32>() else {
                continue;
            };
            let entry = entries.entry(index).or_default();
            match field {
                "Key" => entry.0 = value.clone(),
                "Value" => entry.1 = value.clone(),
                _ => {}
            }
        }
        entries
            .into_values()
            .filter(|(k, _)| !k.is_empty())
            .collect()
    }

    /// `Filters.Filter.N.Name` with `Filters.Filter.N.Values.Value.M`.
    pub fn filters(&self) -> Vec<(String, Vec<String>)> {
        let mut filters: std::collections::BTreeMap<u32, (String, Vec<(u32, String)>)> =
            Default::default();
        for (key, value) in &self.0.0 {
            let Some(rest) = key.strip_prefix("Filters.") else {
                continue;
            };
            let parts: Vec<&str> = rest.split('.').collect();
            match parts.as_slice() {
                [_, index, "Name"] => {
                    if let Ok(index) = index.parse::<u32>() {
                        filters.entry(index).or_default().0 = value.clone();
                    }
                }
                [_, index, "Values", _, value_index] => {
                    if let (Ok(index), Ok(value_index)) =
                        (index.parse::<u32>(), value_index.parse::<u32>())
                    {
                        filters
                            .entry(index)
                            .or_default()
                            .1
                            .push((value_index, value.clone()));
                    }
                }
                _ => {}
            }
        }
        filters
            .into_values()
            .map(|(name, mut values)| {
                values.sort_by_key(|(i, _)| *i);
                (name, values.into_iter().map(|(_, v)| v).collect())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_tags_and_filters_in_both_member_forms() {
        let q = QueryParams::from_pairs(&[
            ("ValuesToAdd.AttributeValue.2", "b"),
            ("ValuesToAdd.member.1", "a"),
            ("Tags.Tag.1.Key", "env"),
            ("Tags.Tag.1.Value", "prod"),
            ("Tags.member.2.Key", "team"),
            ("Filters.Filter.1.Name", "engine"),
            ("Filters.Filter.1.Values.Value.2", "mysql"),
            ("Filters.Filter.1.Values.Value.1", "postgres"),
            ("StorageEncrypted", "true"),
            ("Port", "x"),
        ]);
        let p = Params(&q);
        assert_eq!(p.list("ValuesToAdd"), vec!["a", "b"]);
        assert_eq!(
            p.tags("Tags"),
            vec![
                ("env".into(), "prod".into()),
                ("team".into(), String::new())
            ]
        );
        assert_eq!(
            p.filters(),
            vec![("engine".into(), vec!["postgres".into(), "mysql".into()])]
        );
        assert_eq!(p.bool("StorageEncrypted").ok(), Some(Some(true)));
        assert!(p.int("Port").is_err());
        assert!(p.required("Missing").is_err());
    }
}
