//! A byte buffer for secrets: zeroized on drop, never printed.

use std::fmt;

use zeroize::Zeroize;

/// Plaintext key material or other secret bytes.
///
/// The buffer is overwritten with zeros when dropped, `Debug` prints only the length, and
/// there is no `Display`, `Serialize` or `Clone`-by-accident (`Clone` is explicit via
/// [`SecretBytes::duplicate`]) so a secret cannot slip into a log line or a record.
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn zeroed(len: usize) -> Self {
        Self(vec![0u8; len])
    }

    /// Copies `bytes` into a new secret; the caller remains responsible for its own copy.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An explicit copy, so that duplicating a secret is always visible in the code.
    pub fn duplicate(&self) -> Self {
        Self(self.0.clone())
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        crate::constant_time_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let s = SecretBytes::copy_from(b"hunter2");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("7 bytes"));
    }
}
