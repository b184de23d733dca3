//! The tamper matrix: any change after signing fails verification.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fidius_core::archive::{pack_dir, unpack, verify_archive, SignaturePolicy, UnpackLimits};
use fidius_core::signing::{generate_signing_key, sign_dir, verify_dir, KeyFingerprint};
use fidius_core::tree::{PackageTree, Selection};
use fidius_core::PackageError;

use crate::support::{copy_tree, write_package, TestResult};

const VENDORED: &[(&str, &[u8])] = &[
    ("vendor/alpha/__init__.py", b"VALUE = 'alpha'\n"),
    ("vendor/beta/__init__.py", b"VALUE = 'beta!'\n"),
    ("data/empty.txt", b""),
];

type Tamper = fn(&Path) -> std::io::Result<()>;

fn flip_first_byte(path: &Path) -> std::io::Result<()> {
    let mut bytes = fs::read(path)?;
    match bytes.first_mut() {
        Some(byte) => *byte ^= 0x01,
        None => bytes.push(0),
    }
    fs::write(path, bytes)
}

const TAMPERS: &[(&str, Tamper)] = &[
    ("add a file", |root| {
        fs::write(root.join("extra.py"), "import os\n")
    }),
    ("add an empty file", |root| {
        fs::write(root.join("vendor/alpha/new.py"), "")
    }),
    ("delete a file", |root| {
        fs::remove_file(root.join("greeter.py"))
    }),
    ("delete an empty file", |root| {
        fs::remove_file(root.join("data/empty.txt"))
    }),
    ("rename a file", |root| {
        fs::rename(root.join("greeter.py"), root.join("greeter2.py"))
    }),
    ("swap vendor contents", |root| {
        let alpha = root.join("vendor/alpha/__init__.py");
        let beta = root.join("vendor/beta/__init__.py");
        let (a, b) = (fs::read(&alpha)?, fs::read(&beta)?);
        fs::write(&alpha, b)?;
        fs::write(&beta, a)
    }),
    ("swap vendor directories", |root| {
        let vendor = root.join("vendor");
        fs::rename(vendor.join("alpha"), vendor.join("tmp"))?;
        fs::rename(vendor.join("beta"), vendor.join("alpha"))?;
        fs::rename(vendor.join("tmp"), vendor.join("beta"))
    }),
    ("corrupt the signature", |root| {
        flip_first_byte(&root.join("package.sig"))
    }),
    ("truncate the signature", |root| {
        fs::write(root.join("package.sig"), [0u8; 63])
    }),
];

#[test]
fn every_tamper_fails_verification() -> TestResult {
    let work = tempfile::tempdir()?;
    let package = write_package(work.path(), VENDORED)?;
    let key = generate_signing_key();
    let trusted = [key.verifying_key()];
    let signed = sign_dir(&package, &key)?;
    assert_eq!(verify_dir(&package, &trusted)?, signed);

    let files = PackageTree::scan(&package, Selection::Digest)?.files;
    assert_eq!(files.len(), 5);
    for file in &files {
        let copy = work
            .path()
            .join(format!("flip-{}", file.relative_path.replace('/', "_")));
        copy_tree(&package, &copy)?;
        flip_first_byte(&copy.join(&file.relative_path))?;
        let error = verify_dir(&copy, &trusted).expect_err(&file.relative_path);
        assert!(
            matches!(error, PackageError::SignatureInvalid { .. }),
            "{}: {error}",
            file.relative_path
        );
    }
    for (index, (name, tamper)) in TAMPERS.iter().enumerate() {
        let copy = work.path().join(format!("tamper-{index}"));
        copy_tree(&package, &copy)?;
        tamper(&copy)?;
        let error = verify_dir(&copy, &trusted).expect_err(name);
        assert!(
            matches!(
                error,
                PackageError::SignatureInvalid { .. }
                    | PackageError::SignatureMalformed { len: 63, .. }
            ),
            "{name}: {error}"
        );
    }
    let copy = work.path().join("unsigned");
    copy_tree(&package, &copy)?;
    fs::remove_file(copy.join("package.sig"))?;
    let error = verify_dir(&copy, &trusted).expect_err("unsigned");
    assert!(
        matches!(error, PackageError::SignatureMissing { .. }),
        "{error}"
    );
    Ok(())
}

#[test]
fn wrong_public_key_fails_and_is_named() -> TestResult {
    let work = tempfile::tempdir()?;
    let package = write_package(work.path(), VENDORED)?;
    sign_dir(&package, &generate_signing_key())?;
    let stranger = generate_signing_key().verifying_key();
    let error = verify_dir(&package, &[stranger]).expect_err("wrong key");
    assert!(
        error
            .to_string()
            .contains(&KeyFingerprint::of(&stranger).to_string()),
        "{error}"
    );
    Ok(())
}

#[test]
fn packing_with_a_key_gives_a_verifiable_archive() -> TestResult {
    let work = tempfile::tempdir()?;
    let package = write_package(work.path(), VENDORED)?;
    let key = generate_signing_key();
    let packed = pack_dir(&package, work.path(), SignaturePolicy::SignWith(&key))?;
    let fingerprint = KeyFingerprint::of(&key.verifying_key());
    assert!(packed.signed);
    assert_eq!(packed.signed_by, Some(fingerprint));
    let verified = verify_archive(
        &packed.path,
        &[key.verifying_key()],
        &UnpackLimits::default(),
    )?;
    assert_eq!(
        (verified.key, verified.digest),
        (fingerprint, packed.digest)
    );
    let error = verify_archive(
        &packed.path,
        &[generate_signing_key().verifying_key()],
        &UnpackLimits::default(),
    )
    .expect_err("wrong key");
    assert!(
        matches!(error, PackageError::SignatureInvalid { .. }),
        "{error}"
    );

    // The unpacked copy is what a host sees; tampering with it must show too.
    let unpacked = unpack(
        fs::File::open(&packed.path)?,
        &work.path().join("dest"),
        &UnpackLimits::default(),
    )?;
    verify_dir(&unpacked.root, &[key.verifying_key()])?;
    fs::write(
        unpacked.root.join("vendor/beta/__init__.py"),
        "VALUE = 'evil'\n",
    )?;
    assert!(verify_dir(&unpacked.root, &[key.verifying_key()]).is_err());
    Ok(())
}

/// Makes the package look as if it was written two minutes ago and signed one minute ago, so
/// "changed after signing" does not depend on the file system's timestamp resolution.
fn backdate_signed_package(package: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(package) {
        let entry = entry.map_err(std::io::Error::other)?;
        if entry.file_type().is_file() {
            let age = if entry.file_name() == "package.sig" {
                60
            } else {
                120
            };
            fs::File::options()
                .write(true)
                .open(entry.path())?
                .set_modified(SystemTime::now() - Duration::from_secs(age))?;
        }
    }
    Ok(())
}

#[test]
fn signing_then_vendoring_then_packing_without_a_key_is_refused() -> TestResult {
    let work = tempfile::tempdir()?;
    let package = write_package(work.path(), &[])?;
    let key = generate_signing_key();
    sign_dir(&package, &key)?;
    backdate_signed_package(&package)?;
    // Untouched since signing: packs, signature included.
    let packed = pack_dir(
        &package,
        &work.path().join("ok"),
        SignaturePolicy::RefuseNewerFiles,
    )?;
    assert!(packed.signed);
    verify_archive(
        &packed.path,
        &[key.verifying_key()],
        &UnpackLimits::default(),
    )?;

    fs::create_dir_all(package.join("vendor/six"))?;
    fs::write(package.join("vendor/six/__init__.py"), "")?;
    let out = work.path().join("stale");
    let error = pack_dir(&package, &out, SignaturePolicy::RefuseNewerFiles).expect_err("stale");
    assert!(
        matches!(error, PackageError::StaleSignature { .. }),
        "{error}"
    );
    assert!(
        !out.exists() || fs::read_dir(&out)?.next().is_none(),
        "a refused pack wrote output"
    );

    let error = pack_dir(
        &package,
        &out,
        SignaturePolicy::CheckExisting(&[key.verifying_key()]),
    )
    .expect_err("stale");
    assert!(
        matches!(error, PackageError::SignatureInvalid { .. }),
        "{error}"
    );

    let packed = pack_dir(&package, &out, SignaturePolicy::SignWith(&key))?;
    verify_archive(
        &packed.path,
        &[key.verifying_key()],
        &UnpackLimits::default(),
    )?;
    Ok(())
}
