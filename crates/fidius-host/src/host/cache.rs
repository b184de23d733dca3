//! Where `.fid` archives are unpacked: one folder per archive content hash.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use fidius_core::archive::{unpack, UnpackLimits};
use fidius_core::PackageError;
use sha2::{Digest, Sha256};

/// Unpacked archives under `dir/<sha256 of the archive>/NAME-VERSION/`.
///
/// An archive seen before in this process (same path, size and modification time) costs one stat.
/// A new one is hashed, then unpacked (defensively, see `fidius_core::archive`) into a staging folder
/// that `accept` must approve before it is renamed into place, so nothing unverified is ever served
/// from the cache.
#[derive(Debug)]
pub(crate) struct ArchiveCache {
    dir: PathBuf,
    limits: UnpackLimits,
    seen: Mutex<HashMap<(PathBuf, u64, SystemTime), PathBuf>>,
}

impl ArchiveCache {
    pub(crate) fn new(dir: PathBuf, limits: UnpackLimits) -> Self {
        Self {
            dir,
            limits,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The unpacked package root of `archive`, unpacking it if needed. `accept` checks a freshly
    /// unpacked tree (signature policy) before it enters the cache.
    pub(crate) fn unpacked<E>(
        &self,
        archive: &Path,
        accept: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<PathBuf, CacheError<E>> {
        let metadata = std::fs::metadata(archive).map_err(PackageError::io(archive))?;
        let key = (
            archive.to_path_buf(),
            metadata.len(),
            metadata.modified().map_err(PackageError::io(archive))?,
        );
        if let Some(root) = self.seen_root(&key) {
            return Ok(root);
        }
        let hash = sha256_file(archive)?;
        let slot = self.dir.join(&hash);
        let root = match existing_root(&slot)? {
            Some(root) => root,
            None => {
                std::fs::create_dir_all(&self.dir).map_err(PackageError::io(&self.dir))?;
                let staging = tempfile::Builder::new()
                    .prefix(".staging-")
                    .tempdir_in(&self.dir)
                    .map_err(PackageError::io(&self.dir))?;
                let file = File::open(archive).map_err(PackageError::io(archive))?;
                let unpacked = unpack(BufReader::new(file), staging.path(), &self.limits)?;
                accept(&unpacked.root).map_err(CacheError::Rejected)?;
                match std::fs::rename(staging.path(), &slot) {
                    Ok(()) => {}
                    // Another process or thread unpacked the same archive meanwhile: use theirs.
                    Err(_) if slot.is_dir() => {}
                    Err(error) => return Err(PackageError::io(&slot)(error).into()),
                }
                slot.join(&unpacked.top_dir)
            }
        };
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key, root.clone());
        Ok(root)
    }

    fn seen_root(&self, key: &(PathBuf, u64, SystemTime)) -> Option<PathBuf> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .cloned()
    }
}

/// Why [`ArchiveCache::unpacked`] has no tree to give.
#[derive(Debug)]
pub(crate) enum CacheError<E> {
    /// The archive could not be read or unpacked.
    Package(PackageError),
    /// `accept` refused the unpacked tree.
    Rejected(E),
}

impl<E> From<PackageError> for CacheError<E> {
    fn from(error: PackageError) -> Self {
        CacheError::Package(error)
    }
}

/// The single `NAME-VERSION` folder inside an existing cache slot.
fn existing_root(slot: &Path) -> Result<Option<PathBuf>, PackageError> {
    let entries = match std::fs::read_dir(slot) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(PackageError::io(slot)(error)),
    };
    let mut dirs = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir());
    Ok(dirs.next())
}

fn sha256_file(path: &Path) -> Result<String, PackageError> {
    let mut file = File::open(path).map_err(PackageError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 << 10];
    loop {
        let read = file.read(&mut buffer).map_err(PackageError::io(path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
