//! Every failure exits 1 with one clear `error:` line (plus context), never a panic.

use std::fs;
use std::io::Write;

use crate::support::{fails_with, fidius, listing, stdout, succeeds, write_package, TestResult};

#[test]
fn pack_of_a_missing_or_invalid_package() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    fails_with(
        &fidius(cwd, &["pack", "nowhere"]),
        &["cannot pack nowhere", "nowhere/package.toml"],
    );

    let package = write_package(cwd, &[])?;
    fs::write(
        package.join("package.toml"),
        "[package]\nname = \"Bad Name\"\n",
    )?;
    fails_with(
        &fidius(cwd, &["pack", "my-greeter-py"]),
        &[
            "package.toml is invalid",
            "package.name",
            "missing field `package.version`",
        ],
    );
    fs::write(package.join("package.toml"), "[package\n")?;
    fails_with(
        &fidius(cwd, &["pack", "my-greeter-py"]),
        &["is not valid TOML"],
    );
    assert_eq!(
        listing(cwd)?,
        ["my-greeter-py"],
        "a failed pack wrote something"
    );
    Ok(())
}

#[test]
fn validate_lists_every_problem() -> TestResult {
    let work = tempfile::tempdir()?;
    let package = write_package(work.path(), &[])?;
    let manifest = crate::support::MANIFEST
        .replace("version = \"0.1.0\"", "version = \"one\"")
        .replace(
            "entry_module = \"greeter\"",
            "entry_module = \"missing\"\nisolaton = \"auto\"",
        );
    fs::write(package.join("package.toml"), manifest)?;
    let output = fidius(work.path(), &["package", "validate", "my-greeter-py"]);
    fails_with(&output, &["has 3 problem(s)"]);
    let listed = stdout(&output);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    for fragment in [
        "package.version",
        "unknown key `python.isolaton`",
        "python.entry_module",
    ] {
        assert!(listed.contains(fragment), "{fragment:?} not in:\n{listed}");
    }
    Ok(())
}

#[test]
fn verify_failures_are_named_and_do_not_stop_the_batch() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    let package = write_package(cwd, &[])?;
    succeeds(&fidius(cwd, &["keygen", "--out", "good"]));
    succeeds(&fidius(cwd, &["keygen", "--out", "other"]));

    fails_with(
        &fidius(
            cwd,
            &["package", "verify", "--key", "good.public", "my-greeter-py"],
        ),
        &["1 of 1 packages failed verification"],
    );
    succeeds(&fidius(
        cwd,
        &["package", "sign", "--key", "good.secret", "my-greeter-py"],
    ));
    let other = stdout(&fidius(cwd, &["keygen", "--out", "third"]));
    assert!(!other.is_empty());

    let output = fidius(
        cwd,
        &[
            "package",
            "verify",
            "--key",
            "other.public",
            "my-greeter-py",
        ],
    );
    fails_with(&output, &["1 of 1"]);
    let stderr = crate::support::stderr(&output);
    assert!(
        stderr.contains("my-greeter-py: verification failed: bad signature: no trusted key ("),
        "{stderr}"
    );

    fs::write(package.join("greeter.py"), "import os\n")?;
    let output = fidius(
        cwd,
        &[
            "package",
            "verify",
            "--key",
            "good.public",
            "my-greeter-py",
            "nowhere.fid",
            "my-greeter-py",
        ],
    );
    fails_with(&output, &["3 of 3 packages failed verification"]);
    let stderr = crate::support::stderr(&output);
    assert!(
        stderr.contains("the files changed after signing"),
        "{stderr}"
    );
    assert!(stderr.contains("nowhere.fid"), "{stderr}");

    fs::remove_file(package.join("package.sig"))?;
    let output = fidius(
        cwd,
        &["package", "verify", "--key", "good.public", "my-greeter-py"],
    );
    fails_with(&output, &["1 of 1"]);
    assert!(crate::support::stderr(&output).contains("not signed"));
    Ok(())
}

#[test]
fn tampered_archive_fails_verification() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    write_package(cwd, &[])?;
    succeeds(&fidius(cwd, &["keygen", "--out", "k"]));
    succeeds(&fidius(
        cwd,
        &[
            "pack",
            "my-greeter-py",
            "--key",
            "k.secret",
            "--out",
            "dist",
        ],
    ));
    // Rebuild the archive with one changed file but the old signature.
    succeeds(&fidius(
        cwd,
        &[
            "package",
            "unpack",
            "dist/my-greeter-0.1.0.fid",
            "--dest",
            "x",
        ],
    ));
    fs::write(cwd.join("x/my-greeter-0.1.0/greeter.py"), "import os\n")?;
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    builder.append_dir_all("my-greeter-0.1.0", cwd.join("x/my-greeter-0.1.0"))?;
    let bytes = builder.into_inner()?.finish()?;
    fs::File::create(cwd.join("evil.fid"))?.write_all(&bytes)?;
    let output = fidius(cwd, &["package", "verify", "--key", "k.public", "evil.fid"]);
    fails_with(&output, &["failed verification"]);
    assert!(crate::support::stderr(&output).contains("bad signature"));
    Ok(())
}

#[test]
fn keygen_refuses_to_overwrite_without_force() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    succeeds(&fidius(cwd, &["keygen", "--out", "k"]));
    let secret = fs::read(cwd.join("k.secret"))?;
    fails_with(
        &fidius(cwd, &["keygen", "--out", "k"]),
        &["k.secret already exists", "--force"],
    );
    assert_eq!(secret, fs::read(cwd.join("k.secret"))?);
    succeeds(&fidius(cwd, &["keygen", "--out", "k", "--force"]));
    assert_ne!(secret, fs::read(cwd.join("k.secret"))?);
    fails_with(
        &fidius(cwd, &["keygen", "--out", "no/such/dir/k"]),
        &["no/such/dir/k.secret"],
    );
    Ok(())
}

#[test]
fn bad_key_files_are_named() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    write_package(cwd, &[])?;
    fs::write(cwd.join("short.secret"), [1u8; 31])?;
    fails_with(
        &fidius(
            cwd,
            &["package", "sign", "--key", "short.secret", "my-greeter-py"],
        ),
        &["cannot load secret key", "short.secret is 31 bytes"],
    );
    fails_with(
        &fidius(
            cwd,
            &[
                "package",
                "verify",
                "--key",
                "missing.public",
                "my-greeter-py",
            ],
        ),
        &["cannot load public key", "missing.public"],
    );
    fails_with(
        &fidius(cwd, &["pack", "my-greeter-py", "--key", "missing.secret"]),
        &["cannot load secret key"],
    );
    succeeds(&fidius(cwd, &["keygen", "--out", "k"]));
    fails_with(
        &fidius(
            cwd,
            &["package", "sign", "--key", "k.public", "my-greeter-py"],
        ),
        &["k.public looks like a public key; pass the .secret file"],
    );
    fails_with(
        &fidius(
            cwd,
            &["package", "verify", "--key", "k.secret", "my-greeter-py"],
        ),
        &["k.secret looks like a secret key; pass the .public file"],
    );
    assert!(!cwd.join("my-greeter-py/package.sig").exists());
    Ok(())
}

#[test]
fn unpack_refuses_garbage_and_leaves_dest_alone() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    fs::write(cwd.join("garbage.fid"), "not an archive at all")?;
    fs::create_dir(cwd.join("dest"))?;
    fails_with(
        &fidius(cwd, &["package", "unpack", "garbage.fid", "--dest", "dest"]),
        &["refused to unpack garbage.fid", "not a .fid archive"],
    );
    assert!(listing(&cwd.join("dest"))?.is_empty());
    fails_with(
        &fidius(cwd, &["package", "unpack", "missing.fid", "--dest", "dest"]),
        &["cannot open missing.fid"],
    );
    fails_with(
        &fidius(cwd, &["package", "inspect", "missing.fid"]),
        &["cannot read archive missing.fid"],
    );
    Ok(())
}

#[test]
fn usage_errors_exit_2() -> TestResult {
    let work = tempfile::tempdir()?;
    for args in [
        &["package", "verify", "dir"][..],
        &["keygen"],
        &["package", "frobnicate"],
    ] {
        let output = fidius(work.path(), args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(crate::support::stderr(&output).contains("Usage:"));
    }
    Ok(())
}

/// A reader that stops early (`fidius package inspect DIR | head`) ends the command quietly: no
/// panic, no backtrace, exit 0. The pipe's read end is closed before `fidius` starts, so its first
/// write to stdout fails with EPIPE whatever the timing.
#[test]
fn a_closed_stdout_ends_printing_commands_quietly() -> TestResult {
    let work = tempfile::tempdir()?;
    let package = write_package(work.path(), &[])?;
    let dir = package.to_string_lossy().into_owned();
    for args in [
        &["package", "inspect", dir.as_str()][..],
        &["package", "validate", dir.as_str()][..],
        &["keygen", "--out", "key"][..],
    ] {
        let (reader, writer) = rustix::pipe::pipe()?;
        drop(reader);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_fidius"))
            .args(args)
            .current_dir(work.path())
            .env_remove("FIDIUS_LOG")
            .env("RUST_BACKTRACE", "1")
            .stdout(std::fs::File::from(writer))
            .stderr(std::process::Stdio::piped())
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.is_empty(),
            "fidius {args:?} on a closed pipe: {}\n{stderr}",
            output.status
        );
    }
    Ok(())
}
