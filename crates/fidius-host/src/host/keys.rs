//! Public keys a host trusts.

use std::path::Path;

use fidius_core::signing::{read_verifying_key, KeyFingerprint, VerifyingKey};
use fidius_core::PackageError;

/// An Ed25519 public key (32 raw bytes on disk, as `fidius keygen` writes `NAME.public`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// Reads a `.public` key file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PackageError> {
        Ok(Self {
            key: read_verifying_key(path.as_ref())?,
        })
    }

    /// The short id shown in messages.
    pub fn fingerprint(&self) -> KeyFingerprint {
        KeyFingerprint::of(&self.key)
    }

    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        self.key
    }
}

impl From<VerifyingKey> for PublicKey {
    fn from(key: VerifyingKey) -> Self {
        Self { key }
    }
}
