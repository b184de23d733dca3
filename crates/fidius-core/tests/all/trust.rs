//! Issue 13 at the library level: what is extracted is exactly what the digest covers, the
//! compressed stream is checked to its end, and an archive's top directory is its NAME-VERSION.

use std::fs;
use std::io::Write;
use std::path::Path;

use fidius_core::archive::{
    pack_dir, read_archive_manifest, unpack, verify_archive, SignaturePolicy, UnpackLimits,
};
use fidius_core::signing::{generate_signing_key, sign_dir, verify_dir};
use fidius_core::PackageError;

use crate::support::{inject_into_archive, write_package, TestResult, MANIFEST};

/// Package paths the digest leaves out, each of which a package must not carry.
const UNCOVERED: [&str; 5] = [
    "__pycache__/greeter.cpython-313.pyc",
    "vendor/pkg/__pycache__/mod.cpython-313.pyc",
    "target/debug/out",
    ".git/HEAD",
    "vendor/other.sig",
];

#[test]
fn archive_entries_the_digest_skips_are_refused_by_name() -> TestResult {
    let work = tempfile::tempdir()?;
    let package = write_package(work.path(), &[])?;
    let key = generate_signing_key();
    let packed = pack_dir(
        &package,
        &work.path().join("dist"),
        SignaturePolicy::SignWith(&key),
    )?;
    verify_archive(
        &packed.path,
        &[key.verifying_key()],
        &UnpackLimits::default(),
    )?;
    for (index, path) in UNCOVERED.iter().enumerate() {
        let archive = work.path().join(format!("{index}.fid"));
        fs::copy(&packed.path, &archive)?;
        let entry = format!("my-greeter-0.1.0/{path}");
        inject_into_archive(&archive, &[(&entry, b"x")])?;
        let dest = work.path().join(format!("dest-{index}"));
        let error = unpack(fs::File::open(&archive)?, &dest, &UnpackLimits::default())
            .expect_err("an uncovered entry");
        assert!(
            matches!(&error, PackageError::NotCovered { entry: named, .. } if *named == entry),
            "{path}: {error}"
        );
        assert!(!dest.join("my-greeter-0.1.0").exists());
        let error = verify_archive(&archive, &[key.verifying_key()], &UnpackLimits::default())
            .expect_err("an uncovered entry");
        assert!(error.to_string().contains(&entry), "{error}");
    }
    Ok(())
}

#[test]
fn a_signed_directory_holding_what_the_digest_skips_is_refused() -> TestResult {
    let work = tempfile::tempdir()?;
    let key = generate_signing_key();
    for (index, path) in UNCOVERED.iter().enumerate() {
        let package = write_package(&work.path().join(index.to_string()), &[])?;
        sign_dir(&package, &key)?;
        verify_dir(&package, &[key.verifying_key()])?;
        let file = package.join(path);
        fs::create_dir_all(file.parent().ok_or("no parent")?)?;
        fs::write(&file, "x")?;
        let error = verify_dir(&package, &[key.verifying_key()]).expect_err("uncovered file");
        let PackageError::NotCovered { entry, .. } = &error else {
            panic!("{path}: {error}");
        };
        assert!(path.starts_with(entry.as_str()), "{path}: {error}");
    }
    Ok(())
}

/// The stream is read to its end: cutting off the gzip trailer (CRC and length) or the end of a
/// bzip2 stream is refused, though every tar entry is still intact.
#[test]
fn truncated_compressed_streams_are_refused() -> TestResult {
    let work = tempfile::tempdir()?;
    let package = write_package(work.path(), &[])?;
    let packed = pack_dir(&package, work.path(), SignaturePolicy::RefuseNewerFiles)?;
    let gzip = fs::read(&packed.path)?;
    let tar = {
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gzip.as_slice()), &mut tar)?;
        tar
    };
    let mut bzip2 = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bzip2.write_all(&tar)?;
    let bzip2 = bzip2.finish()?;
    for (name, whole, cut) in [("gzip", &gzip, 4), ("gzip", &gzip, 8), ("bzip2", &bzip2, 4)] {
        let dest = work.path().join(format!("{name}-{cut}"));
        unpack(
            whole.as_slice(),
            &dest.join("whole"),
            &UnpackLimits::default(),
        )?;
        let truncated = &whole[..whole.len() - cut];
        let error = unpack(truncated, &dest.join("cut"), &UnpackLimits::default())
            .expect_err("truncated stream");
        assert!(
            matches!(error, PackageError::CorruptArchive { .. }),
            "{name} cut by {cut}: {error}"
        );
        assert!(!dest.join("cut/my-greeter-0.1.0").exists());
    }
    Ok(())
}

fn archive_with_top(top: &str, path: &Path) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, content) in [
        ("package.toml", MANIFEST.as_bytes()),
        ("greeter.py", b"def greet(name):\n    return name\n"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, format!("{top}/{name}"), content)?;
    }
    fs::write(path, builder.into_inner()?.finish()?)
}

#[test]
fn the_top_directory_must_be_the_manifests_name_version() -> TestResult {
    let work = tempfile::tempdir()?;
    let good = work.path().join("good.fid");
    archive_with_top("my-greeter-0.1.0", &good)?;
    assert_eq!(
        read_archive_manifest(&good)?.manifest.package.name,
        "my-greeter"
    );
    let bad = work.path().join("bad.fid");
    archive_with_top("other-9.9.9", &bad)?;
    let error = read_archive_manifest(&bad).expect_err("mismatched top directory");
    assert!(
        matches!(&error, PackageError::TopDirectoryMismatch { found, expected }
            if found == "other-9.9.9" && expected == "my-greeter-0.1.0"),
        "{error}"
    );
    let key = generate_signing_key();
    let error = verify_archive(&bad, &[key.verifying_key()], &UnpackLimits::default())
        .expect_err("mismatched top directory");
    assert!(
        matches!(error, PackageError::TopDirectoryMismatch { .. }),
        "{error}"
    );
    Ok(())
}
