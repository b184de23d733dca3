//! Issue #9: `fidius pack` probes compiled extensions in child processes and records the results
//! in extensions.toml; `fidius package inspect` shows them and the tier `isolation = "auto"` gets.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{fidius, stderr, succeeds, write_package, TestResult};

/// The file names of two of CPython's own test extension modules: single-phase init (refused by
/// sub-interpreters) and multi-phase init (accepted).
fn stdlib_extensions() -> Result<(PathBuf, String, String), Box<dyn std::error::Error>> {
    let python = option_env!("FIDIUS_BUILD_PYTHON")
        .ok_or("fidius was built without a Python executable to ask")?;
    let output = Command::new(python)
        .args([
            "-I",
            "-c",
            "import os, sysconfig, _testmultiphase\n\
             print(os.path.dirname(_testmultiphase.__file__))\n\
             print(sysconfig.get_config_var('EXT_SUFFIX'))",
        ])
        .output()?;
    let text = String::from_utf8(output.stdout)?;
    match text.lines().collect::<Vec<_>>().as_slice() {
        [dir, suffix] => Ok((
            PathBuf::from(dir),
            format!("_testsinglephase{suffix}"),
            format!("_testmultiphase{suffix}"),
        )),
        _ => Err(format!("{python} did not describe itself: {text}").into()),
    }
}

fn vendor_extensions(package: &Path) -> Result<(String, String), Box<dyn std::error::Error>> {
    let (dynload, single, multi) = stdlib_extensions()?;
    fs::create_dir_all(package.join("vendor"))?;
    for file in [&single, &multi] {
        fs::copy(dynload.join(file), package.join("vendor").join(file))?;
    }
    Ok((single, multi))
}

#[test]
fn pack_records_the_probe_and_inspect_shows_the_tier() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    let package = write_package(cwd, &[])?;
    let (single, _) = vendor_extensions(&package)?;
    succeeds(&fidius(cwd, &["keygen", "--out", "k"]));

    let pack = fidius(
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
    let out = succeeds(&pack);
    assert!(
        out.contains("tier:        process if isolation = \"auto\""),
        "{out}"
    );
    assert!(
        stderr(&pack)
            .contains("_testsinglephase: 1 module(s) cannot run in a sub-interpreter: ImportError"),
        "{}",
        stderr(&pack)
    );
    let record = fs::read_to_string(package.join("extensions.toml"))?;
    assert!(record.contains("python = \"3."), "{record}");
    assert!(
        record.contains(&format!(
            "name = \"_testsinglephase\"\nfile = \"vendor/{single}\"\nsubinterpreter = false\n\
             reason = \"ImportError: module _testsinglephase does not support loading in subinterpreters\""
        )),
        "{record}"
    );
    assert!(record.contains("name = \"_testmultiphase\""), "{record}");

    // The record is in the archive, under the signature.
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
    let inspect = succeeds(&fidius(
        cwd,
        &["package", "inspect", "dist/my-greeter-0.1.0.fid"],
    ));
    for expected in [
        "extensions:  extensions.toml, probed with Python 3.",
        "  no   _testsinglephase (ImportError: module _testsinglephase does not support loading in \
         subinterpreters) <- decides the tier",
        "  ok   _testmultiphase",
        "tier:        process (isolation = \"auto\" and 1 of 2 compiled extension module(s) cannot \
         run in a sub-interpreter (recorded in extensions.toml): _testsinglephase (ImportError",
        "extensions.toml",
    ] {
        assert!(inspect.contains(expected), "missing {expected:?} in\n{inspect}");
    }

    // Packing again changes nothing: same record, same archive bytes.
    let first = fs::read(cwd.join("dist/my-greeter-0.1.0.fid"))?;
    let again = fidius(
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
    succeeds(&again);
    assert!(
        stderr(&again).contains("is up to date"),
        "{}",
        stderr(&again)
    );
    assert_eq!(fs::read(cwd.join("dist/my-greeter-0.1.0.fid"))?, first);
    Ok(())
}

#[test]
fn inspect_without_a_record_says_the_host_decides_at_load() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    let package = write_package(cwd, &[])?;
    vendor_extensions(&package)?;
    let inspect = succeeds(&fidius(cwd, &["package", "inspect", "my-greeter-py"]));
    assert!(
        inspect.contains("extensions:  2 compiled module(s), not probed"),
        "{inspect}"
    );
    assert!(
        inspect
            .contains("tier:        decided at load (isolation = \"auto\" and no extensions.toml"),
        "{inspect}"
    );

    // A package without compiled extensions needs no record.
    let work = tempfile::tempdir()?;
    write_package(work.path(), &[("vendor/helper.py", "")])?;
    let inspect = succeeds(&fidius(
        work.path(),
        &["package", "inspect", "my-greeter-py"],
    ));
    assert!(
        inspect.contains(
            "tier:        subinterpreter (isolation = \"auto\" and no compiled extensions under vendor/)"
        ),
        "{inspect}"
    );
    Ok(())
}

#[test]
fn pack_does_not_invalidate_an_existing_signature_to_record_the_probe() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    let package = write_package(cwd, &[])?;
    vendor_extensions(&package)?;
    succeeds(&fidius(cwd, &["keygen", "--out", "k"]));
    succeeds(&fidius(
        cwd,
        &["package", "sign", "--key", "k.secret", "my-greeter-py"],
    ));
    let pack = fidius(
        cwd,
        &[
            "pack",
            "my-greeter-py",
            "--out",
            "dist",
            "--public-key",
            "k.public",
        ],
    );
    succeeds(&pack);
    assert!(
        stderr(&pack).contains("warning: not writing")
            && stderr(&pack).contains("hosts probe at load"),
        "{}",
        stderr(&pack)
    );
    assert!(!package.join("extensions.toml").exists());
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
    Ok(())
}

/// A record written into a package names no folder of the packer's machine: an extension that
/// fails with its own path in the error is recorded relative to `<package>`, and the probe prints
/// one line per top-level package.
#[test]
fn recorded_reasons_name_no_machine_paths() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    let package = write_package(cwd, &[])?;
    fs::create_dir_all(package.join("vendor/broken"))?;
    fs::write(package.join("vendor/broken/__init__.py"), "")?;
    for name in ["first", "second"] {
        fs::write(
            package.join(format!("vendor/broken/{name}.abi3.so")),
            "not an ELF file\n",
        )?;
    }
    let pack = fidius(cwd, &["pack", "my-greeter-py", "--out", "dist"]);
    succeeds(&pack);
    assert!(
        stderr(&pack).contains("  broken: 2 module(s) cannot run in a sub-interpreter: "),
        "{}",
        stderr(&pack)
    );
    let record = fs::read_to_string(package.join("extensions.toml"))?;
    let absolute = package.canonicalize()?.to_string_lossy().into_owned();
    assert!(!record.contains(&absolute), "{record}");
    assert!(
        record.contains("<package>/vendor/broken/first.abi3.so"),
        "{record}"
    );
    Ok(())
}
