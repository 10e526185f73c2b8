//! Request validation with AWS's `ValidationException` wording:
//! `1 validation error detected: Value 'x' at 'keyId' failed to satisfy constraint: …`.
//! Member names in messages are lower camel case, as AWS prints them.

use crate::error::KmsError;

/// Collects constraint violations of one request; [`Validator::finish`] turns them into a
/// single `ValidationException`.
#[derive(Default)]
pub(crate) struct Validator {
    problems: Vec<String>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    fn fail(&mut self, value: Option<&str>, member: &str, constraint: &str) {
        let shown = match value {
            Some(v) => format!("Value '{v}'"),
            None => "Value".to_owned(),
        };
        self.problems.push(format!(
            "{shown} at '{member}' failed to satisfy constraint: {constraint}"
        ));
    }

    /// A required member must be present.
    pub fn required<'a, T>(&mut self, member: &str, value: &'a Option<T>) -> Option<&'a T> {
        if value.is_none() {
            self.problems.push(format!(
                "Value null at '{member}' failed to satisfy constraint: Member must not be null"
            ));
        }
        value.as_ref()
    }

    /// String length bounds (in characters).
    pub fn length(&mut self, member: &str, value: Option<&str>, min: usize, max: usize) {
        if let Some(v) = value {
            let len = v.chars().count();
            if len < min {
                self.fail(
                    Some(v),
                    member,
                    &format!("Member must have length greater than or equal to {min}"),
                );
            } else if len > max {
                self.fail(
                    Some(v),
                    member,
                    &format!("Member must have length less than or equal to {max}"),
                );
            }
        }
    }

    /// Blob length bounds; blobs are never echoed back in the message.
    pub fn blob_length(&mut self, member: &str, value: Option<&[u8]>, min: usize, max: usize) {
        if let Some(v) = value {
            if v.len() < min {
                self.fail(
                    None,
                    member,
                    &format!("Member must have length greater than or equal to {min}"),
                );
            } else if v.len() > max {
                self.fail(
                    None,
                    member,
                    &format!("Member must have length less than or equal to {max}"),
                );
            }
        }
    }

    /// Integer range bounds.
    pub fn range(&mut self, member: &str, value: Option<i64>, min: i64, max: i64) {
        if let Some(v) = value {
            if v < min {
                self.fail(
                    Some(&v.to_string()),
                    member,
                    &format!("Member must have value greater than or equal to {min}"),
                );
            } else if v > max {
                self.fail(
                    Some(&v.to_string()),
                    member,
                    &format!("Member must have value less than or equal to {max}"),
                );
            }
        }
    }

    /// Enumerated string values.
    pub fn one_of(&mut self, member: &str, value: Option<&str>, allowed: &[&str]) {
        if let Some(v) = value.filter(|v| !allowed.contains(v)) {
            self.fail(
                Some(v),
                member,
                &format!(
                    "Member must satisfy enum value set: [{}]",
                    allowed.join(", ")
                ),
            );
        }
    }

    /// A free-form problem in AWS's words.
    pub fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(message.into());
    }

    pub fn finish(self) -> Result<(), KmsError> {
        match self.problems.len() {
            0 => Ok(()),
            1 => Err(KmsError::Validation(format!(
                "1 validation error detected: {}",
                self.problems.join("")
            ))),
            n => Err(KmsError::Validation(format!(
                "{n} validation errors detected: {}",
                self.problems.join("; ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_aws() {
        let mut v = Validator::new();
        v.range("numberOfBytes", Some(1025), 1, 1024);
        let Err(KmsError::Validation(message)) = v.finish() else {
            unreachable!("expected a validation error");
        };
        assert_eq!(
            message,
            "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024"
        );

        let mut v = Validator::new();
        v.blob_length("plaintext", Some(&[0u8; 4097]), 1, 4096);
        v.required::<String>("keyId", &None);
        let Err(KmsError::Validation(message)) = v.finish() else {
            unreachable!("expected a validation error");
        };
        assert_eq!(
            message,
            "2 validation errors detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096; Value null at 'keyId' failed to satisfy constraint: Member must not be null"
        );
    }
}
