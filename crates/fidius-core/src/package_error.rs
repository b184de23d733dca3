//! Errors from scanning, digesting, archiving, unpacking, signing and verifying packages.

use std::fmt;
use std::path::PathBuf;

use crate::fs::FileError;
use crate::manifest::ManifestError;
use crate::signing::KeyFingerprint;

/// Everything that can go wrong while handling a package on disk or in a `.fid` archive.
///
/// Archive entries are named as they appear inside the archive (`NAME-VERSION/dir/file`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// A file or directory could not be read or written.
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Walking the package directory failed.
    #[error("cannot walk the package directory")]
    Walk {
        #[source]
        source: walkdir::Error,
    },
    /// The package directory holds something that is neither a regular file nor a directory.
    #[error("{path} is a symlink or special file; packages may contain only regular files and directories")]
    UnsupportedFileType { path: PathBuf },
    /// A path inside the package is not valid UTF-8, so it has no stable digest encoding.
    #[error("{path:?} is not valid UTF-8")]
    NonUtf8Path { path: PathBuf },
    /// A file the package describes itself with (or the archive) is not a regular file within its
    /// size bound.
    #[error(transparent)]
    File(#[from] FileError),
    /// The package's `package.toml` is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),

    /// The archive is neither gzip nor bzip2.
    #[error(
        "not a .fid archive: it starts with bytes {magic}, expected gzip (1f8b) or bzip2 (425a68)"
    )]
    UnknownCompression { magic: String },
    /// Decompressing or reading the tar stream failed.
    #[error("the archive is corrupt or truncated")]
    CorruptArchive {
        #[source]
        source: std::io::Error,
    },
    /// Writing the archive stream failed.
    #[error("cannot write the archive")]
    ArchiveWrite {
        #[source]
        source: std::io::Error,
    },
    /// The archive has no entries.
    #[error("the archive is empty")]
    EmptyArchive,
    /// A path given as a package is neither a plugin directory (with `package.toml`) nor a `.fid` file.
    #[error("{path} is neither a plugin directory with package.toml nor a .fid file")]
    NotAPackage { path: PathBuf },
    /// An archive holds no `NAME-VERSION/package.toml`.
    #[error("{archive} contains no package.toml")]
    ManifestMissing { archive: PathBuf },
    /// An entry's path contains `..`.
    #[error("archive entry {entry:?} contains a `..` component")]
    PathTraversal { entry: String },
    /// An entry's path is absolute.
    #[error("archive entry {entry:?} is an absolute path")]
    AbsolutePath { entry: String },
    /// A symbolic link entry.
    #[error("archive entry {entry:?} is a symlink to {target:?}; links are not allowed")]
    Symlink { entry: String, target: String },
    /// A hard link entry.
    #[error("archive entry {entry:?} is a hard link to {target:?}; links are not allowed")]
    Hardlink { entry: String, target: String },
    /// A device, FIFO or other special entry.
    #[error("archive entry {entry:?} has tar type {type_flag:?}; only regular files and directories are allowed")]
    SpecialFile { entry: String, type_flag: char },
    /// An entry that is not inside the archive's single top directory.
    #[error("archive entry {entry:?} is not inside a top directory")]
    OutsideTopDirectory { entry: String },
    /// Entries under two different top directories.
    #[error(
        "the archive has two top directories, {first:?} and {second:?}; a package has exactly one"
    )]
    MultipleTopDirectories { first: String, second: String },
    /// The same path appears twice.
    #[error("archive entry {entry:?} appears more than once")]
    DuplicateEntry { entry: String },
    /// More entries than [`UnpackLimits::max_entries`](crate::archive::UnpackLimits).
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    /// More content than [`UnpackLimits::max_unpacked_bytes`](crate::archive::UnpackLimits).
    #[error("the archive unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    /// Content grows faster than [`UnpackLimits::max_compression_ratio`](crate::archive::UnpackLimits) allows.
    #[error("the archive expands more than {limit}:1 ({unpacked} bytes out of {compressed} compressed); refusing a possible decompression bomb")]
    CompressionRatio {
        limit: u64,
        compressed: u64,
        unpacked: u64,
    },
    /// The unpack destination already holds the package's top directory.
    #[error("{path} already exists")]
    DestinationExists { path: PathBuf },

    /// The package has no `package.sig`.
    #[error("the package is not signed: {path} does not exist")]
    SignatureMissing { path: PathBuf },
    /// `package.sig` is not 64 bytes.
    #[error("{path} is {len} bytes; an Ed25519 signature is 64")]
    SignatureMalformed { path: PathBuf, len: u64 },
    /// No trusted key verifies the signature over the current contents.
    #[error("bad signature: no trusted key ({}) verifies it over the current contents; the files changed after signing or it was made with another key", Joined(trusted, ", "))]
    SignatureInvalid { trusted: Vec<KeyFingerprint> },
    /// `package.sig` no longer matches the tree being packed.
    #[error("{path} is stale: the package changed after it was signed; sign it again")]
    StaleSignature { path: PathBuf },
    /// Verification was asked for with no key to trust.
    #[error("no trusted public key was given")]
    NoTrustedKeys,
    /// A key file has the wrong size.
    #[error("{path} is {len} bytes; an Ed25519 {kind} key file holds exactly 32 raw bytes")]
    KeyLength {
        path: PathBuf,
        kind: &'static str,
        len: u64,
    },
    /// 32 bytes that are not a valid Ed25519 public key.
    #[error("{path} is not a valid Ed25519 public key")]
    InvalidPublicKey {
        path: PathBuf,
        #[source]
        source: ed25519_dalek::SignatureError,
    },
    /// A key file to write is a symlink; keys are never written through one, even with `--force`.
    #[error("{path} is a symlink; refusing to write a key through it")]
    KeySymlink { path: PathBuf },
    /// An archive entry, or a file in a package checked against its signature, that the digest
    /// does not cover (so no signature could vouch for it).
    #[error("{entry:?} is not covered by the package digest ({reason}); a package may hold only files its signature covers")]
    NotCovered { entry: String, reason: &'static str },
    /// The archive's top directory is not the manifest's `NAME-VERSION`.
    #[error("the archive's top directory is {found:?}, but its package.toml says {expected:?} (NAME-VERSION)")]
    TopDirectoryMismatch { found: String, expected: String },
    /// Key generation would overwrite an existing file.
    #[error("{path} already exists; refusing to overwrite it")]
    KeyExists { path: PathBuf },
}

impl PackageError {
    /// Wraps an I/O error with the path it concerns (for `map_err`).
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| PackageError::Io { path, source }
    }
}

/// Displays items separated by `separator`, for error messages that list several things.
pub(crate) struct Joined<'a, T>(pub(crate) &'a [T], pub(crate) &'static str);

impl<T: fmt::Display> fmt::Display for Joined<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, item) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(self.1)?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}
