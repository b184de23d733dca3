//! `fidius pack` vendors requirements with a real pip from the package registry.

use std::fs;

use fidius_core::archive::{unpack, UnpackLimits};

use crate::support::{
    fails_with, fidius, listing, stderr, stdout, succeeds, write_package, TestResult,
};

/// A small pure-Python distribution, pinned so the test sees the same files every time.
const PINNED: &str = "six==1.17.0";

fn with_requirements(manifest: &str) -> String {
    manifest.replace(
        "entry_module = \"greeter\"",
        "entry_module = \"greeter\"\nrequirements = \"requirements.txt\"",
    )
}

#[test]
fn pack_vendors_requirements_and_refuses_a_stale_signature() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    let package = write_package(cwd, &[("requirements.txt", &format!("{PINNED}\n"))])?;
    fs::write(
        package.join("package.toml"),
        with_requirements(crate::support::MANIFEST),
    )?;
    succeeds(&fidius(cwd, &["keygen", "--out", "k"]));
    // Signed before vendoring: the signature cannot cover vendor/.
    succeeds(&fidius(
        cwd,
        &["package", "sign", "--key", "k.secret", "my-greeter-py"],
    ));

    let output = fidius(cwd, &["pack", "my-greeter-py", "--out", "dist"]);
    fails_with(
        &output,
        &["package.sig was made before vendoring", "re-sign"],
    );
    assert!(
        stderr(&output).contains("six"),
        "pip's progress was not streamed:\n{}",
        stderr(&output)
    );
    assert!(
        !cwd.join("dist").exists(),
        "a refused pack wrote an archive"
    );
    assert!(package.join("vendor/six.py").is_file());
    assert!(package
        .join("vendor/six-1.17.0.dist-info/METADATA")
        .is_file());
    // Still stale on a second attempt, now that vendor/ exists.
    fails_with(
        &fidius(cwd, &["pack", "my-greeter-py", "--out", "dist"]),
        &["package.sig is stale"],
    );

    let output = fidius(
        cwd,
        &[
            "pack",
            "my-greeter-py",
            "--out",
            "dist",
            "--key",
            "k.secret",
        ],
    );
    succeeds(&output);
    assert!(
        stderr(&output)
            .contains("using the existing vendor/ (made from the current requirements.txt)"),
        "{}",
        stderr(&output)
    );
    let archive = cwd.join("dist/my-greeter-0.1.0.fid");
    succeeds(&fidius(
        cwd,
        &[
            "package",
            "verify",
            "--key",
            "k.public",
            "dist/my-greeter-0.1.0.fid",
        ],
    ));
    let unpacked = unpack(
        fs::File::open(&archive)?,
        &cwd.join("out"),
        &UnpackLimits::default(),
    )?;
    let dist_info = unpacked.root.join("vendor/six-1.17.0.dist-info");
    assert!(
        dist_info.join("METADATA").is_file(),
        "{:?}",
        listing(&unpacked.root.join("vendor"))?
    );
    assert!(!unpacked.root.join("vendor/__pycache__").exists());
    let inspect = stdout(&fidius(
        cwd,
        &["package", "inspect", "dist/my-greeter-0.1.0.fid"],
    ));
    assert!(inspect.contains("vendored:\n  six 1.17.0"), "{inspect}");
    Ok(())
}

#[test]
fn pip_failure_leaves_no_vendor_directory() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    let package = write_package(
        cwd,
        &[("requirements.txt", "this is not a requirement !!\n")],
    )?;
    fs::write(
        package.join("package.toml"),
        with_requirements(crate::support::MANIFEST),
    )?;
    let before = listing(&package)?;
    fails_with(
        &fidius(cwd, &["pack", "my-greeter-py"]),
        &["pip failed", "vendor was not created"],
    );
    assert_eq!(before, listing(&package)?, "pip failure left files behind");
    assert!(!cwd.join("my-greeter-0.1.0.fid").exists());

    fails_with(
        &fidius(
            cwd,
            &["pack", "my-greeter-py", "--python", "/nonexistent/python3"],
        ),
        &["cannot run /nonexistent/python3 -m pip"],
    );
    assert_eq!(before, listing(&package)?);
    Ok(())
}

/// A vendor/ made by `fidius pack` records the requirements it came from: edit them and the next
/// pack refuses until `--revendor`; a hand-made vendor/ (no record) is used as it is.
#[test]
fn a_stale_vendor_folder_is_refused_until_revendored() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    let package = write_package(cwd, &[("requirements.txt", "six==1.16.0\n")])?;
    fs::write(
        package.join("package.toml"),
        with_requirements(crate::support::MANIFEST),
    )?;
    succeeds(&fidius(cwd, &["pack", "my-greeter-py", "--output", "dist"]));
    assert!(package.join("vendor/six-1.16.0.dist-info").is_dir());

    fs::write(package.join("requirements.txt"), format!("{PINNED}\n"))?;
    fails_with(
        &fidius(cwd, &["pack", "my-greeter-py", "--out", "dist"]),
        &[
            "requirements.txt changed since vendor/ was vendored from it",
            "--revendor",
        ],
    );
    succeeds(&fidius(
        cwd,
        &["pack", "my-greeter-py", "--out", "dist", "--revendor"],
    ));
    assert!(package.join("vendor/six-1.17.0.dist-info").is_dir());
    assert!(!package.join("vendor/six-1.16.0.dist-info").exists());

    // Hand-made: no record, so fidius cannot judge it and says so.
    fs::remove_dir_all(package.join("vendor"))?;
    fs::create_dir_all(package.join("vendor/handmade"))?;
    fs::write(package.join("vendor/handmade/__init__.py"), "")?;
    let output = fidius(cwd, &["pack", "my-greeter-py", "--out", "dist"]);
    succeeds(&output);
    assert!(
        stderr(&output).contains("as it is (not made by `fidius pack`"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

/// Without --out the archive lands in the current directory, as with the original tool.
#[test]
fn pack_writes_into_the_current_directory_by_default() -> TestResult {
    let work = tempfile::tempdir()?;
    write_package(work.path(), &[])?;
    let build = work.path().join("build");
    fs::create_dir(&build)?;
    succeeds(&fidius(&build, &["pack", "../my-greeter-py"]));
    assert!(build.join("my-greeter-0.1.0.fid").is_file());
    assert!(!work.path().join("my-greeter-0.1.0.fid").exists());
    Ok(())
}

/// A `requirements` naming a file that is not there: one error naming the file and both fixes,
/// and nothing written.
#[test]
fn a_missing_requirements_file_is_named_with_how_to_fix_it() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    let package = write_package(cwd, &[])?;
    fs::write(
        package.join("package.toml"),
        with_requirements(crate::support::MANIFEST),
    )?;
    fails_with(
        &fidius(cwd, &["pack", "my-greeter-py"]),
        &[
            "my-greeter-py/requirements.txt",
            "does not exist",
            "create it (empty if the plugin needs no packages) or remove the field",
        ],
    );
    assert_eq!(listing(cwd)?, ["my-greeter-py"]);
    assert_eq!(
        listing(&package)?,
        ["greeter.py", "package.toml"],
        "pack wrote into the package"
    );
    Ok(())
}
