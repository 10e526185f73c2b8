//! Encryption contexts and their canonical, unambiguous byte encoding.

use std::collections::BTreeMap;

/// An encryption context: non-secret key/value pairs bound to a ciphertext as additional
/// authenticated data. Order of pairs never matters; keys and values are case-sensitive.
/// An empty context and no context are the same thing, as in AWS KMS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    pub fn new(pairs: BTreeMap<String, String>) -> Self {
        Self(pairs)
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes authenticated with a ciphertext:
    ///
    /// ```text
    /// u32 BE pair count, then per pair in ascending byte order of keys:
    ///   u32 BE key length, key bytes, u32 BE value length, value bytes
    /// ```
    ///
    /// Length prefixes make the encoding injective: `{"ab":"c"}` and `{"a":"bc"}` differ,
    /// and so do `{"k":""}` and `{}` (the emulators that concatenate keys and values
    /// without separators confuse them).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let size: usize = self.0.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(4 + size);
        push_len(&mut out, self.0.len());
        for (key, value) in &self.0 {
            push_len(&mut out, key.len());
            out.extend_from_slice(key.as_bytes());
            push_len(&mut out, value.len());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // Contexts come from request bodies bounded far below 4 GiB, so saturation never
    // happens in practice; saturating keeps the function total anyway.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

impl FromIterator<(String, String)> for EncryptionContext {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn encoding_is_order_independent() {
        assert_eq!(
            ctx(&[("a", "1"), ("b", "2")]).canonical_bytes(),
            ctx(&[("b", "2"), ("a", "1")]).canonical_bytes()
        );
    }

    #[test]
    fn encoding_is_unambiguous() {
        assert_ne!(
            ctx(&[("ab", "c")]).canonical_bytes(),
            ctx(&[("a", "bc")]).canonical_bytes()
        );
        assert_ne!(
            ctx(&[("k", "")]).canonical_bytes(),
            ctx(&[]).canonical_bytes()
        );
        assert_ne!(
            ctx(&[("a", "b"), ("c", "d")]).canonical_bytes(),
            ctx(&[("a", "b\0\0\0\u{1}c")]).canonical_bytes()
        );
    }
}
