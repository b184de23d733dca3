//! `fidius test`: a plugin made with `fidius init-plugin`, as a user makes it, checked through the
//! host (contract, tier) and its own pytest tests run against the host's SDK; a wrong hash is
//! refused, a failing test fails the command with the failure shown, no pytest is its own status.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::scaffold::{assert_succeeded, build_python, fill_in_greet, make_venv};
use crate::support::{fails_with, fidius, stderr, stdout, succeeds, TestResult};

/// A virtual environment with pytest (and no fidius SDK: the host's comes from `fidius test`),
/// made once per test run.
fn pytest_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fidius-test-pytest-venv");
        let python = venv.join("bin/python");
        let ready = Command::new(&python)
            .args(["-c", "import pytest"])
            .output()
            .is_ok_and(|output| output.status.success());
        if !ready {
            let _ = fs::remove_dir_all(&venv);
            make_venv(&venv, &["pytest"], Path::new(env!("CARGO_TARGET_TMPDIR")));
        }
        python
    })
}

/// `fidius init-interface` and `init-plugin` (no `--fidius-path`: nothing installs the SDK), then
/// `greet` filled in and one test of the author's own calling it. Returns the plugin folder.
fn make_plugin(work: &Path) -> std::io::Result<PathBuf> {
    succeeds(&fidius(
        work,
        &["init-interface", "greeter-api", "--trait", "Greeter"],
    ));
    succeeds(&fidius(
        work,
        &[
            "init-plugin",
            "my-greeter",
            "--interface",
            "greeter-api",
            "--trait",
            "Greeter",
        ],
    ));
    let plugin = work.join("my-greeter");
    fill_in_greet(&plugin.join("my_greeter.py")).expect("fill in greet");
    fs::write(
        plugin.join("tests/test_greet.py"),
        "import my_greeter\n\n\ndef test_greets_by_name():\n    \
         assert my_greeter.greet(\"World\") == \"Hello, World!\"\n",
    )?;
    Ok(plugin)
}

/// `fidius test PACKAGE --interface greeter-api/src/lib.rs --trait-name Greeter EXTRA...`.
fn fidius_test(work: &Path, package: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "test",
        package,
        "--interface",
        "greeter-api/src/lib.rs",
        "--trait-name",
        "Greeter",
    ];
    args.extend(extra);
    fidius(work, &args)
}

fn interface_hash(plugin: &Path) -> std::io::Result<String> {
    let module = fs::read_to_string(plugin.join("my_greeter.py"))?;
    Ok(module
        .lines()
        .find_map(|line| line.strip_prefix("__interface_hash__ = "))
        .expect("the stub declares its hash")
        .to_owned())
}

#[test]
fn a_good_plugin_passes_contract_tier_and_its_own_tests_as_folder_and_archive() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let work = scratch.path();
    let plugin = make_plugin(work)?;
    let hash = interface_hash(&plugin)?;
    let python = pytest_python().to_string_lossy().into_owned();

    let report = succeeds(&fidius_test(work, "my-greeter", &["--python", &python]));
    for expected in [
        &format!("contract:  ok: Greeter v1, interface hash {hash} matches"),
        "methods:   greet (implemented)",
        "warnings:  none",
        "tier:      subinterpreter (",
        "3 passed",
        "result:    ok",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
    // Tested in place without writing anything a signature check would refuse.
    assert!(
        walkdir::WalkDir::new(&plugin)
            .into_iter()
            .filter_map(Result::ok)
            .all(|entry| entry.file_name() != "__pycache__"
                && entry.file_name() != ".pytest_cache"),
        "fidius test left bytecode or a pytest cache in the plugin"
    );

    // The archive: its tests run from the tree the host verified and unpacked.
    succeeds(&fidius(work, &["pack", "my-greeter"]));
    let report = succeeds(&fidius_test(
        work,
        "my-greeter-0.1.0.fid",
        &["--python", &python, "--cache-dir", "cache"],
    ));
    assert!(report.contains("contract:  ok"), "{report}");
    assert!(report.contains("3 passed"), "{report}");

    // A forced tier is the tier reported.
    let report = succeeds(&fidius_test(
        work,
        "my-greeter",
        &["--python", &python, "--isolation", "process"],
    ));
    assert!(report.contains("tier:      process ("), "{report}");
    Ok(())
}

#[test]
fn a_plugin_with_another_hash_is_refused_before_its_tests() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let work = scratch.path();
    let plugin = make_plugin(work)?;
    let module = plugin.join("my_greeter.py");
    let hash = interface_hash(&plugin)?;
    let text = fs::read_to_string(&module)?;
    fs::write(
        &module,
        text.replace(
            &format!("__interface_hash__ = {hash}"),
            "__interface_hash__ = 0x0123456789abcdef",
        ),
    )?;

    let python = pytest_python().to_string_lossy().into_owned();
    let output = fidius_test(work, "my-greeter", &["--python", &python]);
    fails_with(
        &output,
        &[
            "contract: refused",
            "interface hash mismatch",
            &hash,
            "0x0123456789abcdef",
        ],
    );
    assert!(!stdout(&output).contains("passed"), "{}", stdout(&output));
    Ok(())
}

#[test]
fn a_failing_test_of_the_plugin_fails_the_command_and_is_shown() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let work = scratch.path();
    let plugin = make_plugin(work)?;
    fs::write(
        plugin.join("tests/test_wrong.py"),
        "import my_greeter\n\n\ndef test_expects_goodbye():\n    \
         assert my_greeter.greet(\"World\") == \"Goodbye, World!\"\n",
    )?;

    let python = pytest_python().to_string_lossy().into_owned();
    let output = fidius_test(work, "my-greeter", &["--python", &python]);
    fails_with(&output, &["the plugin's tests failed"]);
    let report = stdout(&output);
    assert!(report.contains("contract:  ok"), "{report}");
    assert!(report.contains("test_expects_goodbye"), "{report}");
    assert!(report.contains("Goodbye, World!"), "{report}");
    assert!(report.contains("1 failed, 3 passed"), "{report}");
    Ok(())
}

#[test]
fn no_pytest_in_the_interpreter_is_said_with_its_own_exit_status() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let work = scratch.path();
    make_plugin(work)?;
    let venv = work.join("bare-venv");
    let base = build_python().ok_or("PYO3_PYTHON or the build's Python")?;
    let created = Command::new(base)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output()?;
    assert_succeeded("python -m venv --without-pip", &created);
    let python = venv.join("bin/python").to_string_lossy().into_owned();

    let output = fidius_test(work, "my-greeter", &["--python", &python]);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{errors}");
    assert!(
        errors.contains(&format!("{python} has no pytest")) && errors.contains("pip install"),
        "{errors}"
    );
    assert!(stdout(&output).contains("contract:  ok"));
    Ok(())
}
