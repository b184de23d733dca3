//! Reading the files a package describes itself with (`package.toml`, `package.sig`,
//! `extensions.toml`) and the archives themselves, as what they claim to be.
//!
//! Every such read goes through [`open_regular_file`]: the path is never followed through a
//! symlink, a FIFO or device is never opened for reading (so nothing blocks on open or read), and
//! the size is checked from the file's metadata before a single byte is read, so a 1 GiB
//! `package.sig` costs one `fstat`. Archives are opened with [`open_archive_file`], the same checks
//! except that a symlink to an archive is followed.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Largest `package.toml` read; a real manifest is a few hundred bytes.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Largest `extensions.toml` read; a record lists one line per vendored extension module.
pub const MAX_EXTENSIONS_BYTES: u64 = 4 << 20;

/// Why a file the package names could not be read as a regular file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Nothing exists at the path.
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    /// The path is a symbolic link, which is never followed.
    #[error("{} is a symlink; fidius reads package files only as regular files, never through a link", path.display())]
    Symlink { path: PathBuf },
    /// A directory, FIFO, socket or device.
    #[error("{} is a {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// The file is larger than the bound for its kind (checked before reading).
    #[error("{} is {len} bytes, more than the {limit} bytes allowed", path.display())]
    TooLarge { path: PathBuf, len: u64, limit: u64 },
    /// A text file that is not UTF-8.
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    /// Opening or reading failed.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::NotFound { path }
            | FileError::Symlink { path }
            | FileError::NotRegular { path, .. }
            | FileError::TooLarge { path, .. }
            | FileError::NotUtf8 { path }
            | FileError::Io { path, .. } => path,
        }
    }

    fn io(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            FileError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            FileError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Opens `path` for reading if, and only if, it is a regular file (not through a symlink, not a
/// FIFO or device); returns the file and its length.
pub fn open_regular_file(path: &Path) -> Result<(File, u64), FileError> {
    open_checked(path, Links::Refuse)
}

/// Opens a `.fid` archive named on a search path or command line: a symlink to an archive is
/// followed (the archive is verified by its contents, not by where it lives), but what it leads
/// to must be a regular file, and opening never blocks on a FIFO or device.
pub fn open_archive_file(path: &Path) -> Result<(File, u64), FileError> {
    open_checked(path, Links::Follow)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Links {
    Refuse,
    Follow,
}

fn open_checked(path: &Path, links: Links) -> Result<(File, u64), FileError> {
    // stat first, so a device or FIFO is never opened at all in the common case; the check after
    // opening (on the opened file itself) covers a swap in between.
    let before = match links {
        Links::Refuse => std::fs::symlink_metadata(path),
        Links::Follow => std::fs::metadata(path),
    }
    .map_err(|error| FileError::io(path, error))?;
    check_regular(path, &before)?;
    let file = open_nonblocking(path, links)?;
    let metadata = file
        .metadata()
        .map_err(|error| FileError::io(path, error))?;
    check_regular(path, &metadata)?;
    Ok((file, metadata.len()))
}

/// Reads the whole regular file at `path`, refusing it (before reading) when it is larger than
/// `max_len` bytes.
pub fn read_regular_file(path: &Path, max_len: u64) -> Result<Vec<u8>, FileError> {
    read_bounded(path, open_regular_file(path)?, max_len)
}

/// [`read_regular_file`] for a file the user names (a key file in their configuration): a symlink
/// is followed, but what it leads to must be a regular file no larger than `max_len`, and opening
/// never blocks on a FIFO or device.
pub fn read_named_file(path: &Path, max_len: u64) -> Result<Vec<u8>, FileError> {
    read_bounded(path, open_checked(path, Links::Follow)?, max_len)
}

fn read_bounded(path: &Path, (file, len): (File, u64), max_len: u64) -> Result<Vec<u8>, FileError> {
    let too_large = |len| FileError::TooLarge {
        path: path.to_path_buf(),
        len,
        limit: max_len,
    };
    if len > max_len {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow after the fstat: read one byte past the bound to notice.
    file.take(max_len.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| FileError::io(path, error))?;
    if bytes.len() as u64 > max_len {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`read_regular_file`] for UTF-8 text.
pub fn read_regular_text(path: &Path, max_len: u64) -> Result<String, FileError> {
    String::from_utf8(read_regular_file(path, max_len)?).map_err(|_| FileError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

fn check_regular(path: &Path, metadata: &std::fs::Metadata) -> Result<(), FileError> {
    let file_type = metadata.file_type();
    if file_type.is_file() {
        return Ok(());
    }
    if file_type.is_symlink() {
        return Err(FileError::Symlink {
            path: path.to_path_buf(),
        });
    }
    Err(FileError::NotRegular {
        path: path.to_path_buf(),
        kind: kind_name(&file_type),
    })
}

#[cfg(unix)]
fn kind_name(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

#[cfg(not(unix))]
fn kind_name(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// `O_NOFOLLOW` refuses a symlink in the last component; `O_NONBLOCK` makes opening a FIFO that
/// slipped in after the stat return at once instead of waiting for a writer.
#[cfg(unix)]
fn open_nonblocking(path: &Path, links: Links) -> Result<File, FileError> {
    use rustix::fs::{Mode, OFlags};
    let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if links == Links::Refuse {
        flags |= OFlags::NOFOLLOW;
    }
    match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        Err(rustix::io::Errno::LOOP) if links == Links::Refuse => Err(FileError::Symlink {
            path: path.to_path_buf(),
        }),
        Err(errno) => Err(FileError::io(path, errno.into())),
    }
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path, _links: Links) -> Result<File, FileError> {
    File::open(path).map_err(|error| FileError::io(path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_within_its_bound() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a");
        std::fs::write(&path, "12345")?;
        assert_eq!(read_regular_text(&path, 5)?, "12345");
        let error = read_regular_file(&path, 4).expect_err("too large");
        assert!(matches!(
            error,
            FileError::TooLarge {
                len: 5,
                limit: 4,
                ..
            }
        ));
        let error = read_regular_file(&dir.path().join("missing"), 4).expect_err("missing");
        assert!(matches!(error, FileError::NotFound { .. }));
        let error = read_regular_file(dir.path(), 4).expect_err("directory");
        assert!(matches!(
            error,
            FileError::NotRegular {
                kind: "directory",
                ..
            }
        ));
        Ok(())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn refuses_links_and_fifos_without_blocking() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("target");
        std::fs::write(&target, "secret")?;
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link)?;
        let error = read_regular_file(&link, 100).expect_err("symlink");
        assert!(matches!(error, FileError::Symlink { .. }));
        assert!(!error.to_string().contains("secret"));

        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )?;
        let error = read_regular_file(&fifo, 100).expect_err("fifo");
        assert!(matches!(error, FileError::NotRegular { kind: "FIFO", .. }));

        // Archives may be reached through a link, but only to a regular file.
        assert_eq!(open_archive_file(&link)?.1, 6);
        let fifo_link = dir.path().join("fifo-link");
        std::os::unix::fs::symlink(&fifo, &fifo_link)?;
        let error = open_archive_file(&fifo_link).expect_err("fifo behind a link");
        assert!(matches!(error, FileError::NotRegular { kind: "FIFO", .. }));
        Ok(())
    }
}
