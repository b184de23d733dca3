//! Writing `.fid` archives.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use flate2::{Compression, GzBuilder};

use crate::digest::PackageDigest;
use crate::manifest::Manifest;
use crate::signing::{read_signature, sign_digest, verify_digest, write_signature, KeyFingerprint};
use crate::tree::{PackageFile, PackageTree, Selection};
use crate::PackageError;

/// File extension of package archives.
pub const ARCHIVE_EXTENSION: &str = "fid";

/// Every entry's modification time: the epoch, so archives do not depend on when files were touched.
const FIXED_MTIME: u64 = 0;

/// What [`pack_dir`] does about `package.sig`.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum SignaturePolicy<'a> {
    /// Sign the tree as it will be packed, write `package.sig`, and include it.
    SignWith(&'a SigningKey),
    /// Include an existing `package.sig` only if one of these keys verifies it over the tree as
    /// it will be packed; a package without `package.sig` is packed unsigned.
    CheckExisting(&'a [VerifyingKey]),
    /// Include an existing `package.sig` unless a packed file was modified after it was written
    /// (this catches vendoring or edits after signing, not deletions; use
    /// [`SignaturePolicy::CheckExisting`] for an exact check); a package without it is packed unsigned.
    RefuseNewerFiles,
}

/// The result of [`pack_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedArchive {
    pub path: PathBuf,
    pub digest: PackageDigest,
    /// Whether the archive contains `package.sig`.
    pub signed: bool,
    /// The key that signed or verified `package.sig`, when known.
    pub signed_by: Option<KeyFingerprint>,
    pub file_count: usize,
}

/// Packs the package directory `dir` into `OUT_DIR/NAME-VERSION.fid`.
///
/// The archive is written to a temporary file in `out_dir` and renamed into place, so a
/// failure never leaves a partial `.fid` behind.
pub fn pack_dir(
    dir: &Path,
    out_dir: &Path,
    policy: SignaturePolicy<'_>,
) -> Result<PackedArchive, PackageError> {
    let manifest = Manifest::load(dir)?;
    let mut tree = PackageTree::scan(dir, Selection::Archive)?;
    let digest = PackageDigest::of_files(tree.digest_files())?;
    let signed_by = match (policy, tree.signature_file()) {
        (SignaturePolicy::SignWith(key), _) => {
            write_signature(dir, &sign_digest(&digest, key))?;
            tree = PackageTree::scan(dir, Selection::Archive)?;
            Some(KeyFingerprint::of(&key.verifying_key()))
        }
        (SignaturePolicy::CheckExisting(trusted), Some(signature)) => {
            let signature = read_signature(&signature.absolute_path)?;
            Some(verify_digest(&digest, &signature, trusted)?)
        }
        (SignaturePolicy::RefuseNewerFiles, Some(signature)) => {
            refuse_files_newer_than(&tree, signature)?;
            None
        }
        (_, None) => None,
    };

    fs::create_dir_all(out_dir).map_err(PackageError::io(out_dir))?;
    let path = out_dir.join(format!("{}.{ARCHIVE_EXTENSION}", manifest.archive_stem()));
    let temp = tempfile::Builder::new()
        .prefix(".fidius-pack-")
        .tempfile_in(out_dir)
        .map_err(PackageError::io(out_dir))?;
    let file = write_archive(&tree, &manifest.archive_stem(), temp)?;
    file.as_file()
        .sync_all()
        .map_err(PackageError::io(file.path()))?;
    #[cfg(unix)]
    {
        // Temporary files are created 0600; an archive is meant to be shared.
        use std::os::unix::fs::PermissionsExt;
        file.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(PackageError::io(file.path()))?;
    }
    file.persist(&path)
        .map_err(|error| PackageError::io(&path)(error.error))?;
    tracing::info!(archive = %path.display(), %digest, "packed");
    Ok(PackedArchive {
        path,
        digest,
        signed: tree.signature_file().is_some(),
        signed_by,
        file_count: tree.files.len(),
    })
}

fn refuse_files_newer_than(
    tree: &PackageTree,
    signature: &PackageFile,
) -> Result<(), PackageError> {
    let modified = |file: &PackageFile| {
        fs::metadata(&file.absolute_path)
            .and_then(|metadata| metadata.modified())
            .map_err(PackageError::io(&file.absolute_path))
    };
    let signed_at = modified(signature)?;
    for file in tree.digest_files() {
        if modified(file)? > signed_at {
            tracing::debug!(file = %file.relative_path, "modified after package.sig");
            return Err(PackageError::StaleSignature {
                path: signature.absolute_path.clone(),
            });
        }
    }
    Ok(())
}

/// Writes `tree` as a deterministic tar + gzip stream under `top_dir/` and returns the writer.
pub fn write_archive<W: Write>(
    tree: &PackageTree,
    top_dir: &str,
    mut out: W,
) -> Result<W, PackageError> {
    write_archive_dyn(tree, top_dir, &mut out)?;
    Ok(out)
}

enum Item<'a> {
    Directory(&'a str),
    File(&'a PackageFile),
}

impl Item<'_> {
    fn relative_path(&self) -> &str {
        match self {
            Item::Directory(path) => path,
            Item::File(file) => &file.relative_path,
        }
    }
}

fn write_archive_dyn(
    tree: &PackageTree,
    top_dir: &str,
    out: &mut dyn Write,
) -> Result<(), PackageError> {
    let output_error = |source| PackageError::ArchiveWrite { source };
    let gzip = GzBuilder::new().mtime(0).write(out, Compression::default());
    let mut builder = tar::Builder::new(gzip);
    let mut items: Vec<Item<'_>> = tree
        .directories
        .iter()
        .map(|dir| Item::Directory(dir))
        .chain(tree.files.iter().map(Item::File))
        .collect();
    items.sort_by(|a, b| a.relative_path().cmp(b.relative_path()));

    append(
        &mut builder,
        tar::EntryType::Directory,
        top_dir,
        0o755,
        0,
        io::empty(),
    )
    .map_err(output_error)?;
    for item in items {
        let archive_path = format!("{top_dir}/{}", item.relative_path());
        match item {
            Item::Directory(_) => {
                append(
                    &mut builder,
                    tar::EntryType::Directory,
                    &archive_path,
                    0o755,
                    0,
                    io::empty(),
                )
                .map_err(output_error)?;
            }
            Item::File(file) => {
                let content = File::open(&file.absolute_path)
                    .map_err(PackageError::io(&file.absolute_path))?;
                let mode = if file.executable { 0o755 } else { 0o644 };
                append(
                    &mut builder,
                    tar::EntryType::Regular,
                    &archive_path,
                    mode,
                    file.len,
                    ExactLength {
                        inner: content.take(file.len),
                        remaining: file.len,
                    },
                )
                .map_err(PackageError::io(&file.absolute_path))?;
            }
        }
    }
    builder
        .into_inner()
        .and_then(|gzip| gzip.finish())
        .map_err(output_error)?;
    Ok(())
}

fn append(
    builder: &mut tar::Builder<impl Write>,
    entry_type: tar::EntryType,
    path: &str,
    mode: u32,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(FIXED_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    builder.append_data(&mut header, path, data)
}

/// Yields exactly the length written in the entry's header: a file that grew since the scan is
/// cut off, and one that shrank is an error, since either would corrupt the archive.
struct ExactLength<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactLength<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being packed",
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}
