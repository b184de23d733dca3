//! Where `.fid` archives are unpacked: one private folder ("slot") per archive content hash, proven
//! against its admission record before a host serves it.
//!
//! Layout of a cache folder (by default `$XDG_CACHE_HOME/fidius/packages`,
//! `$HOME/.cache/fidius/packages`, or `fidius-<uid>/packages` in the temp folder):
//!
//! ```text
//! <sha256 of the archive>/NAME-VERSION/...    the verified tree
//! <sha256 of the archive>/.fidius-slot.json   the admission record (every file's path, size, mode, SHA-256)
//! .staging-XXXX/                               an unpack in progress (its `.fidius-unpacking` is locked)
//! .doomed-XXXX/                                a slot being removed (quarantined or pruned)
//! ```
//!
//! The cache folder and every slot must belong to the current user and be writable by nobody else.
//! A slot is written only after `accept` approved the freshly unpacked tree, and its record goes in
//! with it in one rename. Before a slot is served, its files are walked: the set must equal the
//! record exactly (no extra files, no symlinks or special files), everything must still be private,
//! and every file's size and mode must match; a file whose inode and modification and change times
//! are those recorded when it was hashed is unchanged (no user can set a change time), any other is
//! hashed again and its SHA-256 must match. A slot that fails is removed and the archive is
//! unpacked again.
//!
//! A host holds a shared `flock` on the record of every slot its loaded plugins run from
//! ([`SlotLease`]); pruning takes an exclusive one, so a slot in use is never removed. Serving a slot
//! sets its record's modification time, which is the "last used" time pruning goes by.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fidius_core::archive::{unpack, UnpackLimits};
use fidius_core::digest::PackageDigest;
use fidius_core::PackageError;
use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A slot's admission record, beside its `NAME-VERSION` folder.
const RECORD_FILE: &str = ".fidius-slot.json";
/// Held (exclusive `flock`) by the process unpacking into a staging folder.
const STAGING_LOCK: &str = ".fidius-unpacking";
const STAGING_PREFIX: &str = ".staging-";
const DOOMED_PREFIX: &str = ".doomed-";
/// A staging folder without its lock file is one whose owner died between creating it and locking
/// it (or is about to lock it): it is removed once it is this old.
const LOCKLESS_STAGING_GRACE: Duration = Duration::from_secs(600);
/// Records are a few hundred bytes per file; anything larger than this is not one of ours.
const RECORD_LIMIT: u64 = 64 << 20;
const RECORD_FORMAT: u32 = 1;
/// Permission bits that would let someone other than the owner change a file or folder.
const OTHERS_WRITE: u32 = 0o022;

/// Why the package cache cannot be used at all (as opposed to one bad slot, which is replaced).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A cache folder or slot belongs to another user.
    #[error("cache folder {} belongs to uid {owner}, not to this user (uid {user}); refusing to use it", path.display())]
    NotOwned {
        path: PathBuf,
        owner: u32,
        user: u32,
    },
    /// A cache folder is writable by its group or by others.
    #[error("cache folder {} is writable by group or others (mode {mode:04o}); refusing to use it (`chmod go-w` it if it is yours)", path.display())]
    Writable { path: PathBuf, mode: u32 },
    /// A cache folder is a symbolic link or not a folder.
    #[error("cache folder {} is not a directory (a symbolic link or another kind of file)", path.display())]
    NotADirectory { path: PathBuf },
    /// A cache folder or file could not be created, read, written or removed.
    #[error("cache folder {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CacheError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| CacheError::Io { path, source }
    }
}

/// One slot of the package cache, as [`PackageCache::list`] sees it.
#[derive(Debug, Clone)]
pub struct CachedPackage {
    /// The slot folder, named by the SHA-256 of the archive it was unpacked from.
    pub path: PathBuf,
    /// The package's `NAME-VERSION`, if the slot has a readable record.
    pub package: Option<String>,
    /// Bytes of file content in the slot.
    pub bytes: u64,
    /// When a host last served the slot (its record's modification time).
    pub last_used: SystemTime,
    /// Whether a running host holds a loaded plugin from this slot.
    pub in_use: bool,
}

/// What [`PackageCache::prune`] removes. Slots in use are never removed.
#[derive(Debug, Clone, Default)]
pub struct PruneRule {
    /// Remove least recently used slots until the cache holds at most this many bytes.
    pub max_bytes: Option<u64>,
    /// Remove slots not used for this long.
    pub older_than: Option<Duration>,
}

/// A package cache folder: lists and prunes its slots (`fidius cache`); hosts unpack into it.
#[derive(Debug, Clone)]
pub struct PackageCache {
    dir: PathBuf,
    /// The outermost folder that must be private to the user (the cache folder itself, or the
    /// `fidius` folder above the default `packages` folder).
    private_from: PathBuf,
}

impl PackageCache {
    /// The default cache: `$XDG_CACHE_HOME/fidius/packages`, else `$HOME/.cache/fidius/packages`,
    /// else `fidius-<uid>/packages` in the temp folder (created `0700`; never a shared path).
    pub fn default_location() -> Self {
        let root = user_cache_root().unwrap_or_else(|| {
            let uid = rustix::process::geteuid().as_raw();
            std::env::temp_dir().join(format!("fidius-{uid}"))
        });
        Self {
            dir: root.join("packages"),
            private_from: root,
        }
    }

    /// The cache in `dir` (one folder per archive hash).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            private_from: dir.clone(),
            dir,
        }
    }

    /// The folder holding the slots.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the cache folder (`0700`) if needed and checks that it, and the folders between it
    /// and the private root, are directories owned by this user and writable by nobody else.
    pub fn ensure_private(&self) -> Result<(), CacheError> {
        if let Some(parent) = self.private_from.parent() {
            fs::create_dir_all(parent).map_err(CacheError::io(parent))?;
        }
        let below = self
            .dir
            .strip_prefix(&self.private_from)
            .unwrap_or(Path::new(""));
        let mut level = self.private_from.clone();
        ensure_private_dir(&level)?;
        for component in below.components() {
            level.push(component);
            ensure_private_dir(&level)?;
        }
        Ok(())
    }

    /// Every slot, least recently used first. Leftovers of interrupted unpacks are removed first.
    pub fn list(&self) -> Result<Vec<CachedPackage>, CacheError> {
        self.ensure_private()?;
        self.remove_leftovers();
        let entries = fs::read_dir(&self.dir).map_err(CacheError::io(&self.dir))?;
        let mut slots = Vec::new();
        for entry in entries {
            let entry = entry.map_err(CacheError::io(&self.dir))?;
            let name = entry.file_name();
            if !name.to_str().is_some_and(is_slot_name) {
                continue;
            }
            let path = entry.path();
            let Ok(metadata) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !metadata.is_dir() {
                continue;
            }
            let record = open_record(&path).ok();
            let package = record
                .as_ref()
                .and_then(|(file, _)| read_record(file).ok())
                .map(|record| record.top_dir);
            let last_used = record
                .as_ref()
                .and_then(|(_, metadata)| metadata.modified().ok())
                .or_else(|| metadata.modified().ok())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let in_use = record
                .as_ref()
                .is_some_and(|(file, _)| !try_lock_exclusive(file));
            slots.push(CachedPackage {
                bytes: content_bytes(&path),
                path,
                package,
                last_used,
                in_use,
            });
            // Dropping `record` releases the probe lock, if it was taken.
        }
        slots.sort_by_key(|slot| slot.last_used);
        Ok(slots)
    }

    /// Removes slots by `rule` (least recently used first, never one in use); returns those removed.
    pub fn prune(&self, rule: &PruneRule) -> Result<Vec<CachedPackage>, CacheError> {
        let slots = self.list()?;
        let now = SystemTime::now();
        let mut total: u64 = slots.iter().map(|slot| slot.bytes).sum();
        let mut removed = Vec::new();
        for slot in slots {
            if slot.in_use {
                continue;
            }
            let too_old = rule.older_than.is_some_and(|age| {
                now.duration_since(slot.last_used)
                    .is_ok_and(|idle| idle > age)
            });
            let too_big = rule.max_bytes.is_some_and(|max| total > max);
            if !too_old && !too_big {
                continue;
            }
            // Hold the slot exclusively while it goes, so no host starts serving it meanwhile.
            let lock = open_record(&slot.path).ok();
            if lock
                .as_ref()
                .is_some_and(|(file, _)| !try_lock_exclusive(file))
            {
                continue; // a host started using it since it was listed
            }
            self.discard(&slot.path)?;
            total = total.saturating_sub(slot.bytes);
            removed.push(slot);
        }
        // The bytecode cache shares the budget: what the slots that stay leave of it.
        match self.prune_bytecode(rule, total) {
            Ok(pruned) if pruned.files > 0 => {
                tracing::debug!(
                    files = pruned.files,
                    bytes = pruned.bytes,
                    "pruned cached bytecode"
                );
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(cache = %self.dir.display(), %error, "could not prune cached bytecode");
            }
        }
        Ok(removed)
    }

    /// Moves `slot` aside (so nothing finds it under its hash any more) and deletes it.
    fn discard(&self, slot: &Path) -> Result<(), CacheError> {
        match fs::symlink_metadata(slot) {
            Ok(metadata) if metadata.is_dir() => {}
            // A symbolic link or file where a slot belongs: remove the link itself, nothing behind it.
            Ok(_) => return fs::remove_file(slot).map_err(CacheError::io(slot)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(CacheError::io(slot)(error)),
        }
        let doomed = tempfile::Builder::new()
            .prefix(DOOMED_PREFIX)
            .tempdir_in(&self.dir)
            .map_err(CacheError::io(&self.dir))?
            .keep();
        // Renaming onto the fresh empty folder replaces it atomically.
        match fs::rename(slot, &doomed) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                let _ = fs::remove_dir(&doomed);
                return Err(CacheError::io(slot)(error));
            }
        }
        fs::remove_dir_all(&doomed).map_err(CacheError::io(&doomed))
    }

    /// Removes staging folders whose unpacking process died (their lock is free) and half-removed
    /// slots. Best effort: a failure leaves a folder for the next attempt.
    fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if name.starts_with(DOOMED_PREFIX) {
                let _ = fs::remove_dir_all(&path);
            } else if name.starts_with(STAGING_PREFIX) && staging_abandoned(&path) {
                tracing::debug!(path = %path.display(), "removing an interrupted unpack");
                let _ = fs::remove_dir_all(&path);
            }
        }
    }
}

/// `$XDG_CACHE_HOME/fidius` or `$HOME/.cache/fidius` (only absolute paths count, as the XDG
/// specification says).
fn user_cache_root() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .map(|cache| cache.join("fidius"))
        .or_else(|| absolute("HOME").map(|home| home.join(".cache").join("fidius")))
}

/// Creates `dir` (`0700`) unless it exists, then checks it is a directory private to this user.
pub(super) fn ensure_private_dir(dir: &Path) -> Result<(), CacheError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(CacheError::io(dir)(error)),
    }
    let metadata = fs::symlink_metadata(dir).map_err(CacheError::io(dir))?;
    if !metadata.is_dir() {
        return Err(CacheError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    check_private(dir, &metadata)
}

fn check_private(path: &Path, metadata: &fs::Metadata) -> Result<(), CacheError> {
    let user = rustix::process::geteuid().as_raw();
    if metadata.uid() != user {
        return Err(CacheError::NotOwned {
            path: path.to_path_buf(),
            owner: metadata.uid(),
            user,
        });
    }
    if metadata.mode() & OTHERS_WRITE != 0 {
        return Err(CacheError::Writable {
            path: path.to_path_buf(),
            mode: metadata.mode() & 0o7777,
        });
    }
    Ok(())
}

fn is_slot_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// Whether the staging folder's unpacking process is gone: its lock file is free, or it never
/// locked one and the folder is old.
fn staging_abandoned(staging: &Path) -> bool {
    match open_regular(&staging.join(STAGING_LOCK)) {
        Ok((lock, _)) => try_lock_exclusive(&lock),
        Err(_) => fs::symlink_metadata(staging)
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > LOCKLESS_STAGING_GRACE),
    }
}

fn try_lock_exclusive(file: &File) -> bool {
    flock(file, FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Opens a file for reading without following a symbolic link or blocking on a FIFO, and returns
/// it with its `fstat`, only if it is a regular file.
fn open_regular(path: &Path) -> io::Result<(File, fs::Metadata)> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok((file, metadata))
}

fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32
}

fn open_record(slot: &Path) -> io::Result<(File, fs::Metadata)> {
    open_regular(&slot.join(RECORD_FILE))
}

fn read_record(file: &File) -> io::Result<SlotRecord> {
    let mut text = Vec::new();
    file.take(RECORD_LIMIT + 1).read_to_end(&mut text)?;
    if text.len() as u64 > RECORD_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "record too large",
        ));
    }
    serde_json::from_slice(&text).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Bytes of regular-file content under `dir` (symbolic links not followed).
fn content_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// What a slot held when it was admitted.
#[derive(Debug, Serialize, Deserialize)]
struct SlotRecord {
    format: u32,
    /// SHA-256 of the archive (also the slot's name).
    archive_sha256: String,
    /// The package folder inside the slot (`NAME-VERSION`).
    top_dir: String,
    /// The package digest (hex), when `accept` verified a signature over it at admission: a host
    /// serving the proven slot checks the signature against it instead of hashing the tree again.
    #[serde(default)]
    package_digest: Option<String>,
    /// Every folder, relative to the slot, `/`-separated (the package folder included).
    dirs: Vec<String>,
    /// Every regular file, relative to the slot.
    files: Vec<FileRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileRecord {
    path: String,
    size: u64,
    mode: u32,
    sha256: String,
    /// The file's identity when it was hashed: see [`Identity`].
    identity: Identity,
}

/// Inode number and modification and change times (to the nanosecond) of a file. Any write,
/// `chmod`, rename over it or `utime` gives a file a new change time (the current time, which no
/// user can choose), so a file whose identity is unchanged since it was hashed still has the
/// hashed content: the warm path stats instead of re-reading. A file whose identity differs (the
/// cache was copied or restored, or the file was touched or edited) is hashed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    inode: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(metadata: &fs::Metadata) -> Self {
        Self {
            inode: metadata.ino(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// Why a slot is not served (it is then removed and unpacked again).
#[derive(Debug, thiserror::Error)]
enum SlotFault {
    #[error(transparent)]
    Private(#[from] CacheError),
    #[error("it has no readable admission record ({0})")]
    Record(io::Error),
    #[error("its record describes another archive or format")]
    RecordMismatch,
    #[error("{0} is a symbolic link or special file")]
    NotRegular(String),
    #[error("{0} is not in its record")]
    Extra(String),
    #[error("{0} is missing")]
    Missing(String),
    #[error("{0} changed since it was unpacked")]
    Changed(String),
    #[error("{path} cannot be read: {source}")]
    Unreadable { path: String, source: io::Error },
}

/// Proves `slot` is what was admitted for the archive `hash`; returns the package root and a lease.
fn prove_slot(slot: &Path, hash: &str) -> Result<Served, SlotFault> {
    let metadata = fs::symlink_metadata(slot).map_err(CacheError::io(slot))?;
    if !metadata.is_dir() {
        return Err(CacheError::NotADirectory {
            path: slot.to_path_buf(),
        }
        .into());
    }
    check_private(slot, &metadata)?;
    let (record_file, record_metadata) = open_record(slot).map_err(SlotFault::Record)?;
    check_private(&slot.join(RECORD_FILE), &record_metadata)?;
    // Shared for as long as a plugin runs from the slot: pruning (exclusive) waits for none of it.
    flock(&record_file, FlockOperation::LockShared)
        .map_err(|errno| SlotFault::Record(errno.into()))?;
    let record = read_record(&record_file).map_err(SlotFault::Record)?;
    if record.format != RECORD_FORMAT || record.archive_sha256 != hash {
        return Err(SlotFault::RecordMismatch);
    }
    let mut dirs: HashSet<&str> = record.dirs.iter().map(String::as_str).collect();
    let mut files: HashMap<&str, &FileRecord> = record
        .files
        .iter()
        .map(|file| (file.path.as_str(), file))
        .collect();
    for entry in walkdir::WalkDir::new(slot).min_depth(1) {
        let entry = entry.map_err(|error| SlotFault::Unreadable {
            path: slot.display().to_string(),
            source: error.into(),
        })?;
        let relative = relative_name(slot, entry.path())?;
        if entry.depth() == 1 && (relative == RECORD_FILE || relative == STAGING_LOCK) {
            continue;
        }
        let file_type = entry.file_type();
        if file_type.is_dir() {
            let metadata = entry.metadata().map_err(|error| SlotFault::Unreadable {
                path: relative.clone(),
                source: error.into(),
            })?;
            check_private(entry.path(), &metadata)?;
            if !dirs.remove(relative.as_str()) {
                return Err(SlotFault::Extra(relative));
            }
        } else if file_type.is_file() {
            let Some(expected) = files.remove(relative.as_str()) else {
                return Err(SlotFault::Extra(relative));
            };
            let unreadable = |source| SlotFault::Unreadable {
                path: relative.clone(),
                source,
            };
            let metadata = entry.metadata().map_err(|error| unreadable(error.into()))?;
            check_private(entry.path(), &metadata)?;
            if metadata.len() != expected.size || metadata.mode() & 0o7777 != expected.mode {
                return Err(SlotFault::Changed(relative));
            }
            if Identity::of(&metadata) != expected.identity {
                let (file, _) = open_regular(entry.path()).map_err(unreadable)?;
                if sha256_reader(file).map_err(unreadable)? != expected.sha256 {
                    return Err(SlotFault::Changed(relative));
                }
            }
        } else {
            return Err(SlotFault::NotRegular(relative));
        }
    }
    if let Some(missing) = dirs
        .into_iter()
        .map(str::to_owned)
        .chain(files.into_keys().map(str::to_owned))
        .next()
    {
        return Err(SlotFault::Missing(missing));
    }
    let _ = record_file.set_modified(SystemTime::now()); // "last used", as in `lease`
    let digest = record
        .package_digest
        .as_deref()
        .map(|digest| {
            let mut bytes = [0; 32];
            hex::decode_to_slice(digest, &mut bytes).map(|()| PackageDigest(bytes))
        })
        .transpose()
        .map_err(|_| SlotFault::RecordMismatch)?;
    Ok(Served {
        root: slot.join(&record.top_dir),
        lease: Arc::new(SlotLease {
            _record: record_file,
        }),
        digest,
    })
}

fn relative_name(slot: &Path, path: &Path) -> Result<String, SlotFault> {
    let relative = path.strip_prefix(slot).unwrap_or(path);
    relative
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| SlotFault::NotRegular(relative.to_string_lossy().into_owned()))
}

/// Records what an accepted staging folder holds, removing group/other write bits first (an unusual
/// umask must not make every later check fail).
fn record_staging(
    staging: &Path,
    hash: &str,
    top_dir: &str,
    digest: Option<PackageDigest>,
) -> Result<SlotRecord, PackageError> {
    let mut record = SlotRecord {
        format: RECORD_FORMAT,
        archive_sha256: hash.to_owned(),
        top_dir: top_dir.to_owned(),
        package_digest: digest.map(|digest| digest.to_string()),
        dirs: Vec::new(),
        files: Vec::new(),
    };
    for entry in walkdir::WalkDir::new(staging.join(top_dir)).sort_by_file_name() {
        let entry = entry.map_err(|error| PackageError::io(staging)(error.into()))?;
        let path = entry.path();
        let relative = path
            .strip_prefix(staging)
            .ok()
            .and_then(Path::to_str)
            .ok_or_else(|| PackageError::NonUtf8Path {
                path: path.to_path_buf(),
            })?
            .to_owned();
        let metadata = entry
            .metadata()
            .map_err(|error| PackageError::io(path)(error.into()))?;
        let mut mode = metadata.mode() & 0o7777;
        if mode & OTHERS_WRITE != 0 {
            mode &= !OTHERS_WRITE;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(PackageError::io(path))?;
        }
        if entry.file_type().is_dir() {
            record.dirs.push(relative);
        } else {
            let file = File::open(path).map_err(PackageError::io(path))?;
            let sha256 = sha256_reader(&file).map_err(PackageError::io(path))?;
            // Taken after hashing (and after the chmod above): what a later stat must find.
            let hashed = file.metadata().map_err(PackageError::io(path))?;
            record.files.push(FileRecord {
                path: relative,
                size: hashed.len(),
                mode: hashed.mode() & 0o7777,
                sha256,
                identity: Identity::of(&hashed),
            });
        }
    }
    Ok(record)
}

/// A shared lock on `slot`'s record, marking it in use (and its "last used" time).
fn lease(slot: &Path) -> io::Result<SlotLease> {
    let (record, _) = open_record(slot)?;
    flock(&record, FlockOperation::LockShared)?;
    // The "last used" time for pruning; failing to set it only makes pruning less precise.
    let _ = record.set_modified(SystemTime::now());
    Ok(SlotLease { _record: record })
}

/// Keeps a cache slot from being pruned while a plugin runs from it (a shared `flock` on its
/// record, released when the last handle generation using it is dropped).
#[derive(Debug)]
pub(crate) struct SlotLease {
    _record: File,
}

/// A proven slot: the package root inside it, and the lease that keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub(crate) root: PathBuf,
    pub(crate) lease: Arc<SlotLease>,
    /// The package digest recorded at admission (the proven files still have it), if one was.
    pub(crate) digest: Option<PackageDigest>,
}

/// Unpacks archives into a [`PackageCache`] for one host.
///
/// An archive seen before by this host (same path, size and modification time) costs one stat.
/// A new one is hashed; an existing slot for that hash is proven against its record (see the module
/// documentation) or replaced; otherwise the archive is unpacked (defensively, see
/// `fidius_core::archive`) into a staging folder that `accept` must approve before it is renamed
/// into place, so nothing unverified is ever served from the cache.
#[derive(Debug)]
pub(crate) struct ArchiveCache {
    cache: PackageCache,
    limits: UnpackLimits,
    max_bytes: Option<u64>,
    /// Archives this host already proved or admitted: their slot, package root and digest (no
    /// lease: remembering a slot must not keep it from being pruned).
    seen: Mutex<HashMap<ArchiveKey, Remembered>>,
}

/// What a host remembers of a slot it proved: where it is, its package root and recorded digest.
#[derive(Debug)]
struct Remembered {
    slot: PathBuf,
    root: PathBuf,
    digest: Option<PackageDigest>,
}

/// An archive's path, size and modification time.
type ArchiveKey = (PathBuf, u64, SystemTime);

impl ArchiveCache {
    pub(crate) fn new(cache: PackageCache, limits: UnpackLimits, max_bytes: Option<u64>) -> Self {
        Self {
            cache,
            limits,
            max_bytes,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The unpacked package root of `archive`, unpacking it if needed. `accept` checks a freshly
    /// unpacked tree (signature policy) before it enters the cache, and returns the package digest
    /// a signature was verified over, if any, for the slot's record.
    pub(crate) fn unpacked<E>(
        &self,
        archive: &Path,
        accept: impl FnOnce(&Path) -> Result<Option<PackageDigest>, E>,
    ) -> Result<Served, Fetch<E>> {
        let metadata = fs::metadata(archive).map_err(PackageError::io(archive))?;
        let key = (
            archive.to_path_buf(),
            metadata.len(),
            metadata.modified().map_err(PackageError::io(archive))?,
        );
        if let Some(served) = self.seen_slot(&key) {
            return Ok(served);
        }
        self.cache.ensure_private()?;
        let hash = sha256_reader(File::open(archive).map_err(PackageError::io(archive))?)
            .map_err(PackageError::io(archive))?;
        let slot = self.cache.dir.join(&hash);
        let served = match self.existing(archive, &slot, &hash)? {
            Some(served) => served,
            None => self.admit(archive, &slot, &hash, accept)?,
        };
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(
                key,
                Remembered {
                    slot,
                    root: served.root.clone(),
                    digest: served.digest,
                },
            );
        Ok(served)
    }

    /// The existing slot for `hash`, if there is one and it proves to be the admitted content; a
    /// slot that fails is removed, with a warning.
    fn existing(
        &self,
        archive: &Path,
        slot: &Path,
        hash: &str,
    ) -> Result<Option<Served>, CacheError> {
        match fs::symlink_metadata(slot) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(CacheError::io(slot)(error)),
        }
        #[cfg(fidius_bench_unproven_cache)]
        if SERVE_UNPROVEN_FOR_BENCHMARKS.load(std::sync::atomic::Ordering::Relaxed) {
            return unproven(slot).map(Some);
        }
        match prove_slot(slot, hash) {
            Ok(served) => Ok(Some(served)),
            Err(fault) => {
                tracing::warn!(
                    archive = %archive.display(),
                    slot = %slot.display(),
                    "cached copy of this plugin archive is not what was verified ({fault}); removing it and unpacking the archive again"
                );
                self.cache.discard(slot)?;
                Ok(None)
            }
        }
    }

    /// Unpacks `archive` into a locked staging folder, has `accept` check it, records it and renames
    /// it into place as `slot`.
    fn admit<E>(
        &self,
        archive: &Path,
        slot: &Path,
        hash: &str,
        accept: impl FnOnce(&Path) -> Result<Option<PackageDigest>, E>,
    ) -> Result<Served, Fetch<E>> {
        let dir = &self.cache.dir;
        self.cache.remove_leftovers();
        let staging = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(dir)
            .map_err(CacheError::io(dir))?;
        let lock_path = staging.path().join(STAGING_LOCK);
        let lock = File::create(&lock_path).map_err(CacheError::io(&lock_path))?;
        flock(&lock, FlockOperation::LockExclusive)
            .map_err(|errno| CacheError::io(&lock_path)(errno.into()))?;
        let file = File::open(archive).map_err(PackageError::io(archive))?;
        let unpacked = unpack(BufReader::new(file), staging.path(), &self.limits)?;
        let digest = accept(&unpacked.root).map_err(Fetch::Rejected)?;
        let record = record_staging(staging.path(), hash, &unpacked.top_dir, digest)?;
        let record_path = staging.path().join(RECORD_FILE);
        let json = serde_json::to_vec(&record)
            .map_err(|error| CacheError::io(&record_path)(io::Error::other(error)))?;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&record_path)
            .and_then(|mut file| io::Write::write_all(&mut file, &json))
            .map_err(CacheError::io(&record_path))?;
        let renamed = fs::rename(staging.path(), slot);
        drop(lock);
        let _ = fs::remove_file(slot.join(STAGING_LOCK));
        let served = match renamed {
            Ok(()) => Served {
                root: slot.join(&record.top_dir),
                lease: Arc::new(lease(slot).map_err(CacheError::io(slot))?),
                digest,
            },
            // Another process or thread admitted the same archive meanwhile: use theirs if it proves.
            Err(_) if slot.is_dir() => prove_slot(slot, hash).map_err(|fault| match fault {
                SlotFault::Private(error) => error,
                other => CacheError::io(slot)(io::Error::other(other.to_string())),
            })?,
            Err(error) => return Err(CacheError::io(slot)(error).into()),
        };
        if let Some(max_bytes) = self.max_bytes {
            let rule = PruneRule {
                max_bytes: Some(max_bytes),
                older_than: None,
            };
            if let Err(error) = self.cache.prune(&rule) {
                tracing::warn!(cache = %dir.display(), %error, "could not prune the package cache");
            }
        }
        Ok(served)
    }

    /// A slot this host proved before, with a fresh lease; `None` (and forgotten) if it was pruned.
    fn seen_slot(&self, key: &ArchiveKey) -> Option<Served> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let remembered = seen.get(key)?;
        match lease(&remembered.slot) {
            Ok(lease) => Some(Served {
                root: remembered.root.clone(),
                lease: Arc::new(lease),
                digest: remembered.digest,
            }),
            Err(_) => {
                seen.remove(key);
                None
            }
        }
    }
}

/// `ci/bench` only (`--cfg fidius_bench_unproven_cache` in RUSTFLAGS, never in a normal build): serve existing slots
/// without proving them, as fidius did before slots were proven, so that one benchmark run can
/// measure what the proof costs.
#[cfg(fidius_bench_unproven_cache)]
#[doc(hidden)]
pub static SERVE_UNPROVEN_FOR_BENCHMARKS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The old way to serve a slot: its first folder, unchecked (benchmarks only).
#[cfg(fidius_bench_unproven_cache)]
fn unproven(slot: &Path) -> Result<Served, CacheError> {
    let root = fs::read_dir(slot)
        .map_err(CacheError::io(slot))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.is_dir())
        .ok_or_else(|| CacheError::NotADirectory {
            path: slot.to_path_buf(),
        })?;
    Ok(Served {
        root,
        lease: Arc::new(lease(slot).map_err(CacheError::io(slot))?),
        digest: None,
    })
}

/// Why [`ArchiveCache::unpacked`] has no tree to give.
#[derive(Debug)]
pub(crate) enum Fetch<E> {
    /// The archive could not be read or unpacked.
    Package(PackageError),
    /// The cache folder is not private or not usable.
    Cache(CacheError),
    /// `accept` refused the unpacked tree.
    Rejected(E),
}

impl<E> From<PackageError> for Fetch<E> {
    fn from(error: PackageError) -> Self {
        Fetch::Package(error)
    }
}

impl<E> From<CacheError> for Fetch<E> {
    fn from(error: CacheError) -> Self {
        Fetch::Cache(error)
    }
}

fn sha256_reader(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 << 10];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
