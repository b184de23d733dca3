//! The host's private bytecode cache: compiled plugin and vendored modules, so that a load, reload or
//! worker restart does not compile the same sources again.
//!
//! It lives in the package cache folder (`<cache>/bytecode`, private like the rest of it) and never
//! in a plugin tree, which stays source-only (see `plugin/plugin_imports.py`). A host hands the folder
//! only to the interpreters loading a tree it verified (manifest, signature policy, a proven
//! archive slot); a bare [`PluginSource`](crate::PluginSource) never reads or writes it. Inside, the
//! plugin interpreters keep one folder per interpreter (`<cache tag>-<magic number>-o<optimize>`), and
//! one file per source text, named by its SHA-256: a checked-hash pyc (PEP 552) whose header must
//! match the source being imported, written to a private temporary file and renamed into place.
//! Whatever a file there holds, it is used only for a source with exactly that SHA-256 and that
//! header hash, and only if it is a regular file of this user that nobody else can write.
//!
//! Pruning goes with the package cache ([`PackageCache::prune`]): files not used for `older_than`
//! (a hit refreshes a file's modification time at most hourly), and, for `max_bytes`, the least
//! recently used files once the slots that stay already fill the budget.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::cache::{ensure_private_dir, CacheError, PackageCache, PruneRule};

/// The bytecode folder's name inside the package cache folder (not a slot name, so slot listing and
/// pruning pass it by).
const BYTECODE_DIR: &str = "bytecode";
/// Written by `plugin_imports.py` before the rename into place.
const TEMPORARY_PREFIX: &str = ".tmp-";
/// A temporary file this old belongs to a writer that died.
const TEMPORARY_GRACE: Duration = Duration::from_secs(600);

/// What the bytecode cache may hold when the host has no
/// [`cache_max_size`](crate::PluginHostBuilder::cache_max_size): plugin trees edited in place
/// (directory plugins under development) add files with every change.
pub const DEFAULT_BYTECODE_LIMIT: u64 = 512 << 20;
/// How often a host checks the bound (each check lists the folder).
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// A host's use of the bytecode cache: where it is, and the bound it keeps it under.
#[derive(Debug)]
pub(crate) struct BytecodeCache {
    cache: PackageCache,
    limit: u64,
    last_pruned: Mutex<Option<Instant>>,
}

impl BytecodeCache {
    pub(crate) fn new(cache: PackageCache, max_bytes: Option<u64>) -> Self {
        Self {
            cache,
            limit: max_bytes.unwrap_or(DEFAULT_BYTECODE_LIMIT),
            last_pruned: Mutex::new(None),
        }
    }

    /// The bytecode folder for a tree the host just verified, proven private (and, every few
    /// minutes, brought under the bound); `None` when unusable, with a warning: the plugin then
    /// compiles from source, which is always correct.
    pub(crate) fn dir_for_verified_tree(&self) -> Option<PathBuf> {
        let dir = match self.cache.ensure_bytecode_dir() {
            Ok(dir) => dir,
            Err(error) => {
                tracing::warn!(%error, "not using the bytecode cache");
                return None;
            }
        };
        let due = {
            let mut last = self
                .last_pruned
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let due = last.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            let rule = PruneRule {
                max_bytes: Some(self.limit),
                older_than: None,
            };
            if let Err(error) = self.cache.prune_bytecode(&rule, 0) {
                tracing::warn!(%error, "could not prune cached bytecode");
            }
        }
        Some(dir)
    }
}

/// One cached bytecode file, as pruning sees it.
#[derive(Debug)]
struct BytecodeFile {
    path: PathBuf,
    bytes: u64,
    last_used: SystemTime,
}

/// What [`PackageCache::prune_bytecode`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunedBytecode {
    /// Bytecode files removed.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

impl PackageCache {
    /// The host's bytecode cache folder, inside this cache folder.
    pub fn bytecode_dir(&self) -> PathBuf {
        self.dir().join(BYTECODE_DIR)
    }

    /// Creates the bytecode folder (`0700`) if needed and checks that it and the folders above it
    /// are private to this user; returns it.
    pub(crate) fn ensure_bytecode_dir(&self) -> Result<PathBuf, CacheError> {
        self.ensure_private()?;
        let dir = self.bytecode_dir();
        ensure_private_dir(&dir)?;
        Ok(dir)
    }

    /// Bytes of cached bytecode (every interpreter's).
    pub fn bytecode_bytes(&self) -> u64 {
        self.bytecode_files().iter().map(|file| file.bytes).sum()
    }

    /// Removes cached bytecode by `rule`: files unused for `older_than`, and for `max_bytes` the
    /// least recently used ones until `kept_slot_bytes` (what the package slots that stay hold) plus
    /// the bytecode fit. Also removes temporary files of writers that died. Best effort per file: a
    /// host may be replacing one at the same moment, and a missing file is simply compiled again.
    pub fn prune_bytecode(
        &self,
        rule: &PruneRule,
        kept_slot_bytes: u64,
    ) -> Result<PrunedBytecode, CacheError> {
        self.ensure_bytecode_dir()?;
        let now = SystemTime::now();
        let idle = |file: &BytecodeFile| now.duration_since(file.last_used).unwrap_or_default();
        let mut files = self.bytecode_files();
        files.sort_by_key(|file| file.last_used);
        let mut total = kept_slot_bytes + files.iter().map(|file| file.bytes).sum::<u64>();
        let mut pruned = PrunedBytecode::default();
        for file in files {
            let temporary = file
                .path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(TEMPORARY_PREFIX));
            let too_old = if temporary {
                idle(&file) > TEMPORARY_GRACE
            } else {
                rule.older_than.is_some_and(|age| idle(&file) > age)
            };
            let too_big = !temporary && rule.max_bytes.is_some_and(|max| total > max);
            if !too_old && !too_big {
                continue;
            }
            if fs::remove_file(&file.path).is_ok() {
                total = total.saturating_sub(file.bytes);
                pruned.files += 1;
                pruned.bytes += file.bytes;
            }
        }
        Ok(pruned)
    }

    /// Every regular file one level below the bytecode folder's interpreter folders (symbolic links
    /// and anything else are not followed and not counted).
    fn bytecode_files(&self) -> Vec<BytecodeFile> {
        let mut found = Vec::new();
        for interpreter in entries(&self.bytecode_dir()) {
            if !interpreter.1.is_dir() {
                continue;
            }
            for (path, metadata) in entries(&interpreter.0) {
                if metadata.is_file() {
                    found.push(BytecodeFile {
                        path,
                        bytes: metadata.size(),
                        last_used: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    });
                }
            }
        }
        found
    }
}

/// The entries of `dir` with their `lstat` (none if it cannot be read).
fn entries(dir: &Path) -> impl Iterator<Item = (PathBuf, fs::Metadata)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            let metadata = fs::symlink_metadata(&path).ok()?;
            Some((path, metadata))
        })
}
