//! Ed25519 keys, package signatures and their verification.
//!
//! Key files hold 32 raw bytes (`NAME.secret`, `NAME.public`); `package.sig` holds the 64 raw
//! signature bytes over the [`PackageDigest`]'s 32 bytes, as the original fidius tool writes them.
//! The file names no key, so errors name keys by [`KeyFingerprint`] instead.
//! Verification uses `verify_strict`, which rejects weak keys and malleable signatures.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer;
pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::digest::PackageDigest;
use crate::fs::{read_named_file, read_regular_file, FileError};
use crate::tree::{PackageTree, Selection, SIGNATURE_FILE};
use crate::PackageError;

/// Size of `package.sig`: one raw Ed25519 signature.
const SIGNATURE_LEN: u64 = 64;

/// Short, stable name of a public key: the first 8 bytes of SHA-256 over its 32 bytes, as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyFingerprint([u8; 8]);

impl KeyFingerprint {
    pub fn of(key: &VerifyingKey) -> Self {
        let hash = Sha256::digest(key.as_bytes());
        let mut prefix = [0; 8];
        prefix.copy_from_slice(&hash[..8]);
        Self(prefix)
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// What [`write_key_pair`] does when a key file already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    Refuse,
    Replace,
}

/// Where [`write_key_pair`] put the two halves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairFiles {
    pub secret: PathBuf,
    pub public: PathBuf,
}

/// A fresh key from the operating system's random source.
pub fn generate_signing_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// Writes `STEM.secret` (mode 0600 on Unix) and `STEM.public`, 32 raw bytes each.
/// With [`Overwrite::Refuse`] neither file is written if either exists.
pub fn write_key_pair(
    stem: &Path,
    key: &SigningKey,
    overwrite: Overwrite,
) -> Result<KeyPairFiles, PackageError> {
    let files = KeyPairFiles {
        secret: with_suffix(stem, ".secret"),
        public: with_suffix(stem, ".public"),
    };
    for path in [&files.secret, &files.public] {
        match fs::symlink_metadata(path) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(PackageError::KeySymlink { path: path.clone() })
            }
            Ok(_) if overwrite == Overwrite::Refuse => {
                return Err(PackageError::KeyExists { path: path.clone() })
            }
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(PackageError::io(path)(error)),
        }
    }
    write_key_file(&files.secret, &key.to_bytes(), 0o600, overwrite)?;
    write_key_file(
        &files.public,
        key.verifying_key().as_bytes(),
        0o644,
        overwrite,
    )?;
    Ok(files)
}

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes a fresh file beside `path` and renames it into place: a rename replaces a symlink
/// placed at `path` meanwhile instead of writing through it, and with [`Overwrite::Refuse`] the
/// no-clobber rename fails on anything already there.
fn write_key_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    overwrite: Overwrite,
) -> Result<(), PackageError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".fidius-key-")
        .tempfile_in(dir)
        .map_err(PackageError::io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(PackageError::io(path))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(PackageError::io(path))?;
    let persisted = match overwrite {
        Overwrite::Refuse => temp.persist_noclobber(path),
        Overwrite::Replace => temp.persist(path),
    };
    match persisted {
        Ok(_) => Ok(()),
        Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(PackageError::KeyExists {
                path: path.to_path_buf(),
            })
        }
        Err(error) => Err(PackageError::io(path)(error.error)),
    }
}

/// Bytes in a `*.secret` or `*.public` key file.
const KEY_LEN: u64 = 32;

/// A key file: a regular file (a symlink to one is followed: keys live in the user's own
/// configuration), its length checked before it is read, so a FIFO, a device or a huge file named
/// by mistake is refused instead of read.
fn read_key_bytes(path: &Path, kind: &'static str) -> Result<[u8; 32], PackageError> {
    let wrong_length = |len| PackageError::KeyLength {
        path: path.to_path_buf(),
        kind,
        len,
    };
    let bytes = match read_named_file(path, KEY_LEN) {
        Ok(bytes) => bytes,
        Err(FileError::TooLarge { len, .. }) => return Err(wrong_length(len)),
        Err(error) => return Err(error.into()),
    };
    let len = bytes.len() as u64;
    bytes.try_into().map_err(|_| wrong_length(len))
}

/// Reads a 32-byte `*.secret` file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, PackageError> {
    read_key_bytes(path, "secret").map(|bytes| SigningKey::from_bytes(&bytes))
}

/// Reads a 32-byte `*.public` file.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, PackageError> {
    let bytes = read_key_bytes(path, "public")?;
    VerifyingKey::from_bytes(&bytes).map_err(|source| PackageError::InvalidPublicKey {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a 64-byte `package.sig`: a regular file (never through a symlink), its length checked
/// before it is read.
pub fn read_signature(path: &Path) -> Result<Signature, PackageError> {
    let malformed = |len| PackageError::SignatureMalformed {
        path: path.to_path_buf(),
        len,
    };
    let bytes = match read_regular_file(path, SIGNATURE_LEN) {
        Ok(bytes) => bytes,
        Err(FileError::NotFound { .. }) => {
            return Err(PackageError::SignatureMissing {
                path: path.to_path_buf(),
            })
        }
        Err(FileError::TooLarge { len, .. }) => return Err(malformed(len)),
        Err(error) => return Err(error.into()),
    };
    let len = bytes.len() as u64;
    let bytes: [u8; 64] = bytes.try_into().map_err(|_| malformed(len))?;
    Ok(Signature::from_bytes(&bytes))
}

/// The signature that goes into `package.sig`.
pub fn sign_digest(digest: &PackageDigest, key: &SigningKey) -> Signature {
    key.sign(digest.as_bytes())
}

/// Checks `signature` over `digest` against each trusted key; returns the one that matched.
pub fn verify_digest(
    digest: &PackageDigest,
    signature: &Signature,
    trusted: &[VerifyingKey],
) -> Result<KeyFingerprint, PackageError> {
    verify_message(digest.as_bytes(), signature, trusted)
}

/// The trusted key whose signature over `message` this is.
fn verify_message(
    message: &[u8],
    signature: &Signature,
    trusted: &[VerifyingKey],
) -> Result<KeyFingerprint, PackageError> {
    if trusted.is_empty() {
        return Err(PackageError::NoTrustedKeys);
    }
    trusted
        .iter()
        .find(|key| key.verify_strict(message, signature).is_ok())
        .map(KeyFingerprint::of)
        .ok_or_else(|| PackageError::SignatureInvalid {
            trusted: trusted.iter().map(KeyFingerprint::of).collect(),
        })
}

/// A signature that checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedSignature {
    pub digest: PackageDigest,
    pub key: KeyFingerprint,
}

/// Signs the package directory: writes `DIR/package.sig` over its current digest.
pub fn sign_dir(dir: &Path, key: &SigningKey) -> Result<VerifiedSignature, PackageError> {
    let digest = PackageDigest::of_dir(dir)?;
    write_signature(dir, &sign_digest(&digest, key))?;
    Ok(VerifiedSignature {
        digest,
        key: KeyFingerprint::of(&key.verifying_key()),
    })
}

/// Replaces `DIR/package.sig` in one rename, so readers never see half a signature.
pub fn write_signature(dir: &Path, signature: &Signature) -> Result<(), PackageError> {
    let path = dir.join(SIGNATURE_FILE);
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(PackageError::io(dir))?;
    temp.write_all(&signature.to_bytes())
        .map_err(PackageError::io(temp.path()))?;
    temp.persist(&path)
        .map_err(|error| PackageError::io(&path)(error.error))?;
    Ok(())
}

/// Verifies `DIR/package.sig` against the directory's current digest.
///
/// The directory must hold nothing the digest leaves out (a `__pycache__`, `target` or `.git`
/// directory, a `*.sig` file other than the root `package.sig`): such files would be loaded or
/// trusted with no signature covering them, so their presence is an error naming the first one.
pub fn verify_dir(dir: &Path, trusted: &[VerifyingKey]) -> Result<VerifiedSignature, PackageError> {
    let signature = read_signature(&dir.join(SIGNATURE_FILE))?;
    let tree = PackageTree::scan(dir, Selection::Digest)?;
    tree.refuse_uncovered()?;
    let digest = PackageDigest::of_files(tree.digest_files())?;
    let key = verify_digest(&digest, &signature, trusted)?;
    Ok(VerifiedSignature { digest, key })
}

/// Where the detached signature of a bare file (a Rust plugin library) lives: `FILE.sig`, e.g.
/// `libgreeter.so.sig`, as the original fidius writes it.
pub fn detached_signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Signs the bytes of a bare file: 64 raw Ed25519 bytes over the whole file, the original
/// fidius's `fidius sign` format, written to [`detached_signature_path`] in one rename.
pub fn sign_file(file: &Path, bytes: &[u8], key: &SigningKey) -> Result<PathBuf, PackageError> {
    let path = detached_signature_path(file);
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(PackageError::io(dir))?;
    temp.write_all(&key.sign(bytes).to_bytes())
        .map_err(PackageError::io(temp.path()))?;
    temp.persist(&path)
        .map_err(|error| PackageError::io(&path)(error.error))?;
    Ok(path)
}

/// Checks `file`'s detached signature over `bytes` (the file's contents, read once by the
/// caller so that what is verified is what is used) against each trusted key.
pub fn verify_file(
    file: &Path,
    bytes: &[u8],
    trusted: &[VerifyingKey],
) -> Result<KeyFingerprint, PackageError> {
    let signature = read_signature(&detached_signature_path(file))?;
    verify_message(bytes, &signature, trusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_refuse_overwrite() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let stem = dir.path().join("mykey");
        let key = generate_signing_key();
        let files = write_key_pair(&stem, &key, Overwrite::Refuse)?;
        assert_eq!(fs::read(&files.secret)?.len(), 32);
        assert_eq!(read_signing_key(&files.secret)?.to_bytes(), key.to_bytes());
        assert_eq!(read_verifying_key(&files.public)?, key.verifying_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&files.secret)?.permissions().mode() & 0o777,
                0o600
            );
        }
        let other = generate_signing_key();
        let error = write_key_pair(&stem, &other, Overwrite::Refuse).expect_err("exists");
        assert!(matches!(error, PackageError::KeyExists { .. }));
        assert_eq!(read_signing_key(&files.secret)?.to_bytes(), key.to_bytes());
        write_key_pair(&stem, &other, Overwrite::Replace)?;
        assert_eq!(
            read_signing_key(&files.secret)?.to_bytes(),
            other.to_bytes()
        );
        Ok(())
    }

    #[test]
    fn a_key_file_is_a_bounded_regular_file_a_symlink_to_one_is_followed(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let key = generate_signing_key();
        let files = write_key_pair(&dir.path().join("mykey"), &key, Overwrite::Refuse)?;
        let huge = dir.path().join("huge.public");
        fs::write(&huge, vec![7u8; 1 << 20])?;
        let error = read_verifying_key(&huge).expect_err("1 MiB");
        assert!(matches!(error, PackageError::KeyLength { len, .. } if len == 1 << 20));
        let folder = dir.path().join("folder.public");
        fs::create_dir(&folder)?;
        let error = read_verifying_key(&folder).expect_err("a folder");
        assert!(error.to_string().contains("folder.public"), "{error}");
        #[cfg(unix)]
        {
            let link = dir.path().join("link.public");
            std::os::unix::fs::symlink(&files.public, &link)?;
            assert_eq!(read_verifying_key(&link)?, key.verifying_key());
            // A FIFO is refused without blocking on it (nothing ever writes to this one).
            let fifo = dir.path().join("fifo.public");
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                &fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
            )?;
            let error = read_verifying_key(&fifo).expect_err("a FIFO");
            assert!(error.to_string().contains("fifo.public"), "{error}");
        }
        Ok(())
    }

    #[test]
    fn wrong_sized_key_is_named() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("short.public");
        fs::write(&path, [1u8; 31])?;
        let error = read_verifying_key(&path).expect_err("31 bytes");
        assert!(matches!(error, PackageError::KeyLength { len: 31, .. }));
        Ok(())
    }

    #[test]
    fn wrong_key_names_every_trusted_fingerprint() {
        let digest = PackageDigest([7; 32]);
        let signer = generate_signing_key();
        let signature = sign_digest(&digest, &signer);
        let strangers = [
            generate_signing_key().verifying_key(),
            generate_signing_key().verifying_key(),
        ];
        let error = verify_digest(&digest, &signature, &strangers).expect_err("wrong key");
        let message = error.to_string();
        for key in &strangers {
            assert!(
                message.contains(&KeyFingerprint::of(key).to_string()),
                "{message}"
            );
        }
        let mut trusted = strangers.to_vec();
        trusted.push(signer.verifying_key());
        assert_eq!(
            verify_digest(&digest, &signature, &trusted).ok(),
            Some(KeyFingerprint::of(&signer.verifying_key()))
        );
    }
}
