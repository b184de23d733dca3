//! Defensive extraction of `.fid` archives (see the module's `# Security` section).

use std::cell::Cell;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use crate::tree::refuse_uncovered;
use crate::PackageError;

/// Resource limits for [`unpack`]. `Default` gives the documented values.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnpackLimits {
    /// Most entries (files and directories) accepted. Default: 10,000.
    pub max_entries: u64,
    /// Most bytes of file content written. Default: 512 MiB.
    pub max_unpacked_bytes: u64,
    /// Most bytes written per compressed byte read. Default: 100.
    pub max_compression_ratio: u64,
    /// The ratio is only enforced once this many bytes are written, since tiny archives
    /// legitimately have large ratios (compression headers dominate). Default: 1 MiB.
    pub ratio_check_after_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_unpacked_bytes: 512 * 1024 * 1024,
            max_compression_ratio: 100,
            ratio_check_after_bytes: 1024 * 1024,
        }
    }
}

impl UnpackLimits {
    pub fn with_max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }

    pub fn with_max_unpacked_bytes(mut self, max_unpacked_bytes: u64) -> Self {
        self.max_unpacked_bytes = max_unpacked_bytes;
        self
    }

    pub fn with_max_compression_ratio(mut self, max_compression_ratio: u64) -> Self {
        self.max_compression_ratio = max_compression_ratio;
        self
    }

    pub fn with_ratio_check_after_bytes(mut self, ratio_check_after_bytes: u64) -> Self {
        self.ratio_check_after_bytes = ratio_check_after_bytes;
        self
    }
}

/// Where [`unpack`] put the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedPackage {
    /// `DEST/NAME-VERSION`.
    pub root: PathBuf,
    /// The archive's top directory name (`NAME-VERSION`).
    pub top_dir: String,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const BZIP2_MAGIC: &[u8] = b"BZh";

/// Unpacks a gzip or bzip2 `.fid` stream into `DEST/TOP` (creating `dest` if needed).
pub fn unpack<R: Read>(
    archive: R,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackedPackage, PackageError> {
    let mut archive = archive;
    unpack_dyn(&mut archive, dest, limits)
}

/// Decompresses a gzip or bzip2 stream, chosen by its magic bytes.
pub(crate) fn decompressor<'a>(
    mut input: impl BufRead + 'a,
) -> Result<Box<dyn Read + 'a>, PackageError> {
    let magic = input
        .fill_buf()
        .map_err(|source| PackageError::CorruptArchive { source })?;
    if magic.starts_with(GZIP_MAGIC) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
    } else if magic.starts_with(BZIP2_MAGIC) {
        Ok(Box::new(bzip2::bufread::MultiBzDecoder::new(input)))
    } else {
        Err(PackageError::UnknownCompression {
            magic: hex::encode(&magic[..magic.len().min(4)]),
        })
    }
}

fn unpack_dyn(
    archive: &mut dyn Read,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackedPackage, PackageError> {
    let compressed_bytes = Rc::new(Cell::new(0));
    let input = BufReader::new(CountingReader {
        inner: archive,
        count: Rc::clone(&compressed_bytes),
    });
    let decompressed = decompressor(input)?;

    fs::create_dir_all(dest).map_err(PackageError::io(dest))?;
    let staging = tempfile::Builder::new()
        .prefix(".fidius-unpack-")
        .tempdir_in(dest)
        .map_err(PackageError::io(dest))?;
    let mut extraction = Extraction {
        staging: staging.path(),
        dest,
        limits,
        compressed_bytes: &compressed_bytes,
        top_dir: None,
        entries: 0,
        unpacked_bytes: 0,
    };
    let mut tar = tar::Archive::new(decompressed);
    let entries = tar
        .entries()
        .map_err(|source| PackageError::CorruptArchive { source })?;
    for entry in entries {
        let entry = entry.map_err(|source| PackageError::CorruptArchive { source })?;
        extraction.extract(entry)?;
    }
    // tar stops at its end-of-archive blocks; reading the rest of the stream is what makes the
    // decompressor check the gzip CRC and length trailer (or the bzip2 stream CRC), so a
    // truncated or altered stream is refused rather than half-trusted.
    let mut rest = tar.into_inner();
    extraction.copy_limited(&mut rest, &mut io::sink(), dest)?;
    let top_dir = extraction.top_dir.ok_or(PackageError::EmptyArchive)?;
    let root = dest.join(&top_dir);
    if root.exists() {
        return Err(PackageError::DestinationExists { path: root });
    }
    fs::rename(staging.path().join(&top_dir), &root).map_err(PackageError::io(&root))?;
    Ok(UnpackedPackage { root, top_dir })
}

struct Extraction<'a> {
    staging: &'a Path,
    dest: &'a Path,
    limits: &'a UnpackLimits,
    compressed_bytes: &'a Cell<u64>,
    top_dir: Option<String>,
    entries: u64,
    unpacked_bytes: u64,
}

impl Extraction<'_> {
    fn extract(&mut self, mut entry: tar::Entry<'_, impl Read>) -> Result<(), PackageError> {
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let entry_type = entry.header().entry_type();
        if entry_type == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(PackageError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let path = entry
            .path()
            .map_err(|source| PackageError::CorruptArchive { source })?
            .into_owned();
        let parts = checked_parts(&path, &name)?;
        let is_directory = entry_type == tar::EntryType::Directory;
        check_entry_type(&entry, entry_type, &name)?;
        let Some(top) = parts.first() else {
            return Ok(()); // `./` itself
        };
        self.claim_top_dir(top)?;
        if parts.len() == 1 && !is_directory {
            return Err(PackageError::OutsideTopDirectory { entry: name });
        }
        // What is extracted is exactly what the digest covers (plus the root package.sig).
        refuse_uncovered(&parts[1..].join("/"), is_directory, &name)?;
        let target: PathBuf = parts
            .iter()
            .fold(self.staging.to_path_buf(), |p, s| p.join(s));
        if is_directory {
            return fs::create_dir_all(&target).map_err(PackageError::io(&target));
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(PackageError::io(parent))?;
        }
        let executable = entry.header().mode().is_ok_and(|mode| mode & 0o111 != 0);
        let mut file = match create_file(&target, executable) {
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(PackageError::DuplicateEntry { entry: name })
            }
            other => other.map_err(PackageError::io(&target))?,
        };
        self.copy_limited(&mut entry, &mut file, &target)
    }

    fn claim_top_dir(&mut self, top: &str) -> Result<(), PackageError> {
        match &self.top_dir {
            Some(first) if first != top => Err(PackageError::MultipleTopDirectories {
                first: first.clone(),
                second: top.to_owned(),
            }),
            Some(_) => Ok(()),
            None => {
                let root = self.dest.join(top);
                if root.exists() {
                    return Err(PackageError::DestinationExists { path: root });
                }
                self.top_dir = Some(top.to_owned());
                Ok(())
            }
        }
    }

    fn copy_limited(
        &mut self,
        from: &mut impl Read,
        to: &mut impl Write,
        target: &Path,
    ) -> Result<(), PackageError> {
        let mut buffer = [0u8; 64 * 1024];
        loop {
            let read = from
                .read(&mut buffer)
                .map_err(|source| PackageError::CorruptArchive { source })?;
            if read == 0 {
                return Ok(());
            }
            self.unpacked_bytes += read as u64;
            self.check_size()?;
            to.write_all(&buffer[..read])
                .map_err(PackageError::io(target))?;
        }
    }

    fn check_size(&self) -> Result<(), PackageError> {
        let limits = self.limits;
        if self.unpacked_bytes > limits.max_unpacked_bytes {
            return Err(PackageError::TooLarge {
                limit: limits.max_unpacked_bytes,
            });
        }
        let compressed = self.compressed_bytes.get().max(1);
        if self.unpacked_bytes > limits.ratio_check_after_bytes
            && self.unpacked_bytes > compressed.saturating_mul(limits.max_compression_ratio)
        {
            return Err(PackageError::CompressionRatio {
                limit: limits.max_compression_ratio,
                compressed,
                unpacked: self.unpacked_bytes,
            });
        }
        Ok(())
    }
}

/// The entry's path as plain names, refusing anything that could escape the destination.
fn checked_parts(path: &Path, name: &str) -> Result<Vec<String>, PackageError> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(PackageError::PathTraversal {
                    entry: name.to_owned(),
                })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(PackageError::AbsolutePath {
                    entry: name.to_owned(),
                })
            }
        }
    }
    Ok(parts)
}

fn check_entry_type(
    entry: &tar::Entry<'_, impl Read>,
    entry_type: tar::EntryType,
    name: &str,
) -> Result<(), PackageError> {
    let link_target = || {
        entry
            .link_name_bytes()
            .map(|target| String::from_utf8_lossy(&target).into_owned())
            .unwrap_or_default()
    };
    match entry_type {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => Ok(()),
        tar::EntryType::Symlink => Err(PackageError::Symlink {
            entry: name.to_owned(),
            target: link_target(),
        }),
        tar::EntryType::Link => Err(PackageError::Hardlink {
            entry: name.to_owned(),
            target: link_target(),
        }),
        other => Err(PackageError::SpecialFile {
            entry: name.to_owned(),
            type_flag: char::from(other.as_byte()),
        }),
    }
}

fn create_file(path: &Path, executable: bool) -> io::Result<fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if executable { 0o755 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = executable;
    options.open(path)
}

/// Counts the compressed bytes read, for the compression-ratio limit.
struct CountingReader<'a> {
    inner: &'a mut dyn Read,
    count: Rc<Cell<u64>>,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count.set(self.count.get() + read as u64);
        Ok(read)
    }
}
