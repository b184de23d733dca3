//! Running the built `fidius` binary and building package directories.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

pub use crate::package_support::{TestResult, MANIFEST};

/// A valid package in `DIR/my-greeter-py`, with optional extra text files.
pub fn write_package(dir: &Path, extra: &[(&str, &str)]) -> std::io::Result<std::path::PathBuf> {
    let extra: Vec<(&str, &[u8])> = extra.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
    crate::package_support::write_package(dir, &extra)
}

/// Runs `fidius ARGS` in `cwd`.
pub fn fidius(cwd: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fidius"));
    command.args(args).current_dir(cwd).env_remove("FIDIUS_LOG");
    // Vendor with the interpreter the host embeds: FIDIUS_PYTHON if set, else PYO3_PYTHON,
    // else the one the binary was built against.
    // An empty FIDIUS_PYTHON counts as unset, as it does for the CLI.
    if std::env::var_os("FIDIUS_PYTHON").is_none_or(|value| value.is_empty()) {
        if let Some(python) = std::env::var_os("PYO3_PYTHON") {
            command.env("FIDIUS_PYTHON", python);
        }
    }
    command.output().expect("run the fidius binary")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn succeeds(output: &Output) -> String {
    assert!(
        output.status.success(),
        "fidius failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// Asserts exit code 1 with exactly one `error:` line on stderr, no panic, containing every
/// expected fragment; returns that line.
pub fn fails_with(output: &Output, expected: &[&str]) -> String {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{stderr}");
    for fragment in expected {
        assert!(
            errors[0].contains(fragment),
            "missing {fragment:?} in {:?}",
            errors[0]
        );
    }
    errors[0].to_owned()
}

/// Names of the entries directly inside `dir`, sorted.
pub fn listing(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    Ok(names)
}
