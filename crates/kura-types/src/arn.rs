//! Amazon Resource Names: `arn:partition:service:region:account:resource`.

use std::fmt;

/// A parsed ARN. The resource part keeps any further `:` or `/` it contains.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Arn {
    pub partition: String,
    pub service: String,
    pub region: String,
    pub account: String,
    pub resource: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a valid ARN")]
pub struct ArnError(pub String);

impl Arn {
    pub fn parse(text: &str) -> Result<Self, ArnError> {
        let invalid = || ArnError(text.to_owned());
        let mut parts = text.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(region), Some(account)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid());
        };
        let resource = parts.next().ok_or_else(invalid)?;
        if partition.is_empty() || service.is_empty() || resource.is_empty() {
            return Err(invalid());
        }
        Ok(Self {
            partition: partition.to_owned(),
            service: service.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
            resource: resource.to_owned(),
        })
    }

    /// Builds an ARN in the `aws` partition.
    pub fn new(service: &str, region: &str, account: &str, resource: &str) -> Self {
        Self {
            partition: "aws".to_owned(),
            service: service.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
            resource: resource.to_owned(),
        }
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:{}:{}:{}:{}",
            self.partition, self.service, self.region, self.account, self.resource
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_key_and_alias_arns() {
        for text in [
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:ap-northeast-1:111122223333:alias/aws/rds",
            "arn:aws:iam::111122223333:root",
            "arn:aws:rds:us-east-1:111122223333:cluster:my-cluster",
        ] {
            let arn = Arn::parse(text).unwrap_or_else(|_| Arn::new("x", "", "", "bad"));
            assert_eq!(arn.to_string(), text);
        }
    }

    #[test]
    fn rejects_malformed() {
        for text in [
            "",
            "arn",
            "arn:aws:kms",
            "arn::kms:r:a:x",
            "arn:aws:kms:r:a:",
            "foo:aws:kms:r:a:x",
        ] {
            assert!(Arn::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn keeps_colons_in_resource() {
        let arn = Arn::parse("arn:aws:rds:us-east-1:1:cluster:c:extra").ok();
        assert_eq!(arn.map(|a| a.resource), Some("cluster:c:extra".to_owned()));
    }
}
