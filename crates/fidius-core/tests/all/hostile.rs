//! Hostile archives, built here with the tar crate: each is refused with its own error and
//! leaves the destination exactly as it was.

use std::fs;
use std::io::Write;
use std::path::Path;

use fidius_core::archive::{unpack, UnpackLimits};
use fidius_core::PackageError;

use crate::support::{snapshot, TestResult};

const TOP: &str = "evil-0.1.0";

enum Compression {
    Gzip,
    Bzip2,
}

/// One raw tar entry; the name is written byte for byte, bypassing the tar crate's own checks.
struct RawEntry<'a> {
    name: &'a str,
    entry_type: tar::EntryType,
    link: Option<&'a str>,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> RawEntry<'a> {
    RawEntry {
        name,
        entry_type: tar::EntryType::Regular,
        link: None,
        data,
    }
}

fn dir(name: &str) -> RawEntry<'_> {
    RawEntry {
        name,
        entry_type: tar::EntryType::Directory,
        link: None,
        data: b"",
    }
}

fn link<'a>(name: &'a str, entry_type: tar::EntryType, target: &'a str) -> RawEntry<'a> {
    RawEntry {
        name,
        entry_type,
        link: Some(target),
        data: b"",
    }
}

fn tar_bytes(entries: &[RawEntry<'_>]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_old();
        let name = &mut header.as_old_mut().name;
        name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
        header.set_entry_type(entry.entry_type);
        header.set_mode(0o644);
        header.set_size(entry.data.len() as u64);
        if let Some(target) = entry.link {
            header.set_link_name(target)?;
        }
        header.set_cksum();
        builder.append(&header, entry.data)?;
    }
    builder.into_inner()
}

fn compress(tar: &[u8], compression: Compression) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(tar)?;
            encoder.finish()
        }
        Compression::Bzip2 => {
            let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
            encoder.write_all(tar)?;
            encoder.finish()
        }
    }
}

/// Unpacks `archive` into a destination holding one file, checks the destination is untouched,
/// and returns the error.
fn refuse(
    archive: &[u8],
    limits: &UnpackLimits,
) -> Result<PackageError, Box<dyn std::error::Error>> {
    let work = tempfile::tempdir()?;
    let dest = work.path().join("dest");
    fs::create_dir(&dest)?;
    fs::write(dest.join("keep.txt"), "already here")?;
    let before = snapshot(&dest);
    let result = unpack(archive, &dest, limits);
    assert_eq!(
        before,
        snapshot(&dest),
        "a refused archive changed the destination"
    );
    assert!(!work.path().join("x").exists() && !Path::new("/tmp/fidius-abs-x").exists());
    match result {
        Ok(unpacked) => {
            Err(format!("hostile archive accepted into {}", unpacked.root.display()).into())
        }
        Err(error) => Ok(error),
    }
}

fn refuse_gzip(entries: &[RawEntry<'_>]) -> Result<PackageError, Box<dyn std::error::Error>> {
    refuse(
        &compress(&tar_bytes(entries)?, Compression::Gzip)?,
        &UnpackLimits::default(),
    )
}

#[test]
fn symlink_is_refused() -> TestResult {
    let error = refuse_gzip(&[
        dir(TOP),
        link("evil-0.1.0/passwd", tar::EntryType::Symlink, "/etc/passwd"),
    ])?;
    assert!(
        matches!(&error, PackageError::Symlink { entry, target } if entry == "evil-0.1.0/passwd" && target == "/etc/passwd"),
        "{error}"
    );
    Ok(())
}

#[test]
fn hardlink_is_refused() -> TestResult {
    let error = refuse_gzip(&[
        file("evil-0.1.0/a", b"a"),
        link("evil-0.1.0/b", tar::EntryType::Link, "evil-0.1.0/a"),
    ])?;
    assert!(matches!(error, PackageError::Hardlink { .. }), "{error}");
    Ok(())
}

#[test]
fn parent_component_is_refused() -> TestResult {
    let error = refuse_gzip(&[
        file("evil-0.1.0/ok", b"ok"),
        file("evil-0.1.0/../../x", b"escaped"),
    ])?;
    assert!(
        matches!(&error, PackageError::PathTraversal { entry } if entry == "evil-0.1.0/../../x"),
        "{error}"
    );
    let error = refuse_gzip(&[file("../x", b"escaped")])?;
    assert!(
        matches!(error, PackageError::PathTraversal { .. }),
        "{error}"
    );
    Ok(())
}

#[test]
fn absolute_path_is_refused() -> TestResult {
    let error = refuse_gzip(&[file("/tmp/fidius-abs-x", b"escaped")])?;
    assert!(
        matches!(error, PackageError::AbsolutePath { .. }),
        "{error}"
    );
    Ok(())
}

#[test]
fn two_top_directories_are_refused() -> TestResult {
    let error = refuse_gzip(&[file("evil-0.1.0/a", b"a"), file("other-0.1.0/b", b"b")])?;
    assert!(
        matches!(&error, PackageError::MultipleTopDirectories { first, second } if first == TOP && second == "other-0.1.0"),
        "{error}"
    );
    Ok(())
}

#[test]
fn file_outside_the_top_directory_is_refused() -> TestResult {
    let error = refuse_gzip(&[file("loose.py", b"print()")])?;
    assert!(
        matches!(error, PackageError::OutsideTopDirectory { .. }),
        "{error}"
    );
    Ok(())
}

#[test]
fn device_and_fifo_are_refused() -> TestResult {
    for entry_type in [
        tar::EntryType::Char,
        tar::EntryType::Block,
        tar::EntryType::Fifo,
    ] {
        let error = refuse_gzip(&[
            dir(TOP),
            RawEntry {
                name: "evil-0.1.0/dev",
                entry_type,
                link: None,
                data: b"",
            },
        ])?;
        assert!(matches!(error, PackageError::SpecialFile { .. }), "{error}");
    }
    Ok(())
}

#[test]
fn duplicate_entry_is_refused() -> TestResult {
    let error = refuse_gzip(&[
        file("evil-0.1.0/a", b"first"),
        file("evil-0.1.0/a", b"second"),
    ])?;
    assert!(
        matches!(error, PackageError::DuplicateEntry { .. }),
        "{error}"
    );
    Ok(())
}

#[test]
fn too_many_entries_are_refused_at_the_default_limit() -> TestResult {
    let names: Vec<String> = (0..10_001).map(|i| format!("evil-0.1.0/f{i}")).collect();
    let entries: Vec<RawEntry<'_>> = names.iter().map(|name| file(name, b"")).collect();
    let error = refuse_gzip(&entries)?;
    assert!(
        matches!(error, PackageError::TooManyEntries { limit: 10_000 }),
        "{error}"
    );
    Ok(())
}

#[test]
fn decompression_bomb_is_refused() -> TestResult {
    let zeros = vec![0u8; 8 * 1024 * 1024];
    let error = refuse_gzip(&[file("evil-0.1.0/bomb", &zeros)])?;
    assert!(
        matches!(error, PackageError::CompressionRatio { limit: 100, .. }),
        "{error}"
    );
    Ok(())
}

#[test]
fn configured_limits_apply() -> TestResult {
    let archive = compress(
        &tar_bytes(&[file("evil-0.1.0/a", &[7u8; 4096])])?,
        Compression::Gzip,
    )?;
    let error = refuse(
        &archive,
        &UnpackLimits::default().with_max_unpacked_bytes(4095),
    )?;
    assert!(
        matches!(error, PackageError::TooLarge { limit: 4095 }),
        "{error}"
    );
    let error = refuse(
        &archive,
        &UnpackLimits::default()
            .with_max_compression_ratio(2)
            .with_ratio_check_after_bytes(0),
    )?;
    assert!(
        matches!(error, PackageError::CompressionRatio { limit: 2, .. }),
        "{error}"
    );
    let error = refuse(&archive, &UnpackLimits::default().with_max_entries(0))?;
    assert!(
        matches!(error, PackageError::TooManyEntries { limit: 0 }),
        "{error}"
    );
    Ok(())
}

#[test]
fn bzip2_archives_get_the_same_checks() -> TestResult {
    let tar = tar_bytes(&[file("evil-0.1.0/../x", b"escaped")])?;
    let error = refuse(
        &compress(&tar, Compression::Bzip2)?,
        &UnpackLimits::default(),
    )?;
    assert!(
        matches!(error, PackageError::PathTraversal { .. }),
        "{error}"
    );
    Ok(())
}

#[test]
fn uncompressed_and_garbage_input_is_refused() -> TestResult {
    let error = refuse(
        &tar_bytes(&[file("evil-0.1.0/a", b"a")])?,
        &UnpackLimits::default(),
    )?;
    assert!(
        matches!(error, PackageError::UnknownCompression { .. }),
        "{error}"
    );
    let mut truncated = compress(
        &tar_bytes(&[file("evil-0.1.0/a", &[1u8; 10_000])])?,
        Compression::Gzip,
    )?;
    truncated.truncate(truncated.len() / 2);
    let error = refuse(&truncated, &UnpackLimits::default())?;
    assert!(
        matches!(error, PackageError::CorruptArchive { .. }),
        "{error}"
    );
    Ok(())
}

#[test]
fn existing_package_directory_is_not_overwritten() -> TestResult {
    let work = tempfile::tempdir()?;
    let dest = work.path().join("dest");
    fs::create_dir_all(dest.join(TOP))?;
    fs::write(dest.join(TOP).join("a"), "mine")?;
    let archive = compress(
        &tar_bytes(&[file("evil-0.1.0/a", b"theirs")])?,
        Compression::Gzip,
    )?;
    let error = unpack(archive.as_slice(), &dest, &UnpackLimits::default()).expect_err("exists");
    assert!(
        matches!(error, PackageError::DestinationExists { .. }),
        "{error}"
    );
    assert_eq!(fs::read_to_string(dest.join(TOP).join("a"))?, "mine");
    assert_eq!(fs::read_dir(&dest)?.count(), 1);
    Ok(())
}
