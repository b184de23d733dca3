//! `fidius test`: what a host makes of a plugin (loaded through the host's own code, verified by
//! its rules, in the tier it picks), then the plugin's own tests under pytest with the host's SDK.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use clap::Args;
use fidius_core::interface::OwnedInterfaceDescriptor;
use fidius_host::{PluginCall, PythonPluginHandle, SDK_SOURCE};

use super::call::LoadArgs;
use super::python_stub::read_interface;
use crate::out::outln;
use crate::python::choose_python;

/// Exit status when the plugin's tests cannot run at all (no usable Python, or no pytest in it),
/// as opposed to 1 for a refused plugin or failing tests.
pub const TESTS_NOT_RUN: u8 = 3;

/// Check a plugin the way a host would, then run its own tests (pytest, with the host's SDK).
///
/// The plugin (directory or .fid) is loaded through the host code: manifest, signature policy
/// (--key, --require-signature), interface hash, required methods and their arity, and the tier
/// (auto, or --isolation). The report names the methods it implements, any load warnings and the
/// tier with its reason. Then the package's tests (a `tests/` folder, `test_*.py` or `*_test.py`
/// at its top) run with `PYTHON -m pytest`, with the host's `fidius` SDK, the package and its
/// `vendor/` first on PYTHONPATH; a `.fid` is tested from a copy of the tree the host verified.
///
/// Exit status: 0 when the plugin loads and its tests pass (or it has none); 1 when the host
/// refuses it or a test fails; 3 when the tests cannot run (PYTHON missing, or without pytest).
#[derive(Debug, Args)]
pub struct TestCommand {
    /// The plugin directory or `.fid` archive.
    #[arg(value_name = "DIR|FILE.fid")]
    package: PathBuf,

    /// The Rust source file that declares the interface trait.
    #[arg(long, value_name = "PATH.rs")]
    interface: PathBuf,

    /// The name of the interface trait.
    #[arg(long, value_name = "T")]
    trait_name: String,

    /// The Python that runs the plugin's tests; it needs pytest [default: $FIDIUS_PYTHON, else
    /// the Python fidius was built against].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,

    #[command(flatten)]
    load: LoadArgs,
}

/// The plugin's tests could not be run; `main` exits with [`TESTS_NOT_RUN`].
#[derive(Debug)]
pub struct TestsNotRun(String);

impl fmt::Display for TestsNotRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TestsNotRun {}

impl TestCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let interface = read_interface(&self.interface, &self.trait_name)?;
        let descriptor = std::sync::Arc::new(interface.spec.descriptor());
        let host = self.load.host()?;
        let handle = host
            .load_python_path(
                &self.package,
                std::sync::Arc::clone(&descriptor),
                self.load.options()?,
            )
            .with_context(|| {
                format!(
                    "contract: refused: the host does not load {} as a {} plugin",
                    self.package.display(),
                    descriptor.trait_name
                )
            })?;
        report_contract(&handle, &descriptor)?;
        if handle.tier().tier == fidius_host::Tier::Rust {
            outln!("tests:     none run here (a Rust plugin's own tests run with `cargo test`)")?;
            return Ok(());
        }

        let tree = &handle.source().dir;
        let tests = find_tests(tree)?;
        if tests.is_empty() {
            outln!("tests:     none (no tests/ folder, test_*.py or *_test.py in the package)")?;
            return Ok(());
        }
        let python = choose_python(self.python).map_err(|e| TestsNotRun(format!("{e:#}")))?;
        require_pytest(&python)?;
        let scratch = tempfile::Builder::new()
            .prefix("fidius-test-")
            .tempdir()
            .context("cannot create a scratch folder for the tests")?;
        let sdk = scratch.path().join("sdk");
        write_sdk(&sdk)?;
        // A directory is the author's working tree: tested in place (writing no bytecode, no
        // pytest cache, which would break its signature). An archive's tree is the host's cache
        // slot: its tests run in a copy, so nothing they write can touch the slot.
        let root = if self.package.is_dir() {
            tree.clone()
        } else {
            let copy = scratch
                .path()
                .join(tree.file_name().unwrap_or("package".as_ref()));
            copy_tree(tree, &copy)?;
            copy
        };
        drop(handle);
        outln!(
            "tests:     {} with {} -m pytest",
            tests.join(" "),
            python.display()
        )?;
        run_pytest(&python, &root, &sdk, &tests)
    }
}

/// The contract lines: interface and hash, methods, warnings, tier.
fn report_contract(
    handle: &PythonPluginHandle,
    descriptor: &OwnedInterfaceDescriptor,
) -> anyhow::Result<()> {
    let info = handle.info();
    let (name, version) = info
        .manifest
        .as_ref()
        .map(|m| (m.package.name.clone(), m.package.version.to_string()))
        .unwrap_or_default();
    let signer = match &info.signer {
        Some(key) => format!(", signed by {key}"),
        None => ", unsigned".to_owned(),
    };
    outln!(
        "plugin:    {name} {version} ({}{signer})",
        info.path.display()
    )?;
    outln!(
        "contract:  ok: {} v{}, interface hash {:#018x} matches",
        descriptor.trait_name,
        descriptor.version,
        descriptor.interface_hash
    )?;
    let methods: Vec<String> = descriptor
        .methods
        .iter()
        .enumerate()
        .map(|(index, method)| match method.optional_since {
            // The host checked every required method: present, callable, right arity.
            None => format!("{} (implemented)", method.name),
            Some(since) => {
                // What the loaded plugin defines, as the host found it at load.
                let state = if handle.implements(index) {
                    "implemented"
                } else {
                    "not implemented"
                };
                format!("{} (optional since v{since}, {state})", method.name)
            }
        })
        .collect();
    outln!("methods:   {}", methods.join(", "))?;
    if info.warnings.is_empty() {
        outln!("warnings:  none")?;
    }
    for warning in &info.warnings {
        outln!("warning:   {warning} (loaded as the original fidius would; --strict refuses)")?;
    }
    let tier = handle.tier();
    outln!("tier:      {} ({})", tier.tier, tier.reason)?;
    Ok(())
}

/// The package's tests, as pytest arguments relative to `root`: `tests/`, then test files at the
/// top (never anything under `vendor/`, whose libraries ship their own tests).
fn find_tests(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut tests = Vec::new();
    if root.join("tests").is_dir() {
        tests.push("tests".to_owned());
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_test =
            (name.starts_with("test_") || name.ends_with("_test.py")) && name.ends_with(".py");
        if is_test && entry.file_type().is_ok_and(|kind| kind.is_file()) {
            files.push(name);
        }
    }
    files.sort();
    tests.extend(files);
    Ok(tests)
}

fn require_pytest(python: &Path) -> anyhow::Result<()> {
    let probe = Command::new(python)
        .args(["-c", "import pytest"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(status) if status.success() => Ok(()),
        Ok(_) => Err(TestsNotRun(format!(
            "cannot run the plugin's tests: {python} has no pytest; install it (`{python} -m pip \
             install pytest`) or pass --python with an interpreter that has it",
            python = python.display()
        ))
        .into()),
        Err(error) => Err(TestsNotRun(format!(
            "cannot run the plugin's tests: cannot start {} ({error}); pass --python PATH",
            python.display()
        ))
        .into()),
    }
}

/// Writes the host's SDK as an importable `fidius` package under `dir`.
fn write_sdk(dir: &Path) -> anyhow::Result<()> {
    let package = dir.join("fidius");
    fs::create_dir_all(&package).with_context(|| format!("cannot create {}", package.display()))?;
    fs::write(package.join("__init__.py"), SDK_SOURCE)
        .with_context(|| format!("cannot write the SDK into {}", package.display()))
}

/// Copies a verified plugin tree (regular files and folders only, as the cache admits) to `to`.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.with_context(|| format!("cannot read {}", from.display()))?;
        let relative = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(relative);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&target)
        } else if entry.file_type().is_file() {
            fs::copy(entry.path(), &target).map(drop)
        } else {
            bail!("{} is not a regular file", entry.path().display());
        }
        .with_context(|| format!("cannot copy {} for the tests", entry.path().display()))?;
    }
    Ok(())
}

/// Runs pytest over `tests` in `root`, its output on ours; the package, its `vendor/` and the SDK
/// come first on the path, and nothing is written into the tree (no bytecode, no pytest cache).
fn run_pytest(python: &Path, root: &Path, sdk: &Path, tests: &[String]) -> anyhow::Result<()> {
    let mut path = vec![sdk.to_path_buf(), root.to_path_buf(), root.join("vendor")];
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        path.extend(std::env::split_paths(&existing));
    }
    let path = std::env::join_paths(path).context("a path cannot go on PYTHONPATH")?;
    let status = Command::new(python)
        .args(["-m", "pytest", "-p", "no:cacheprovider"])
        .args(tests)
        .current_dir(root)
        .env("PYTHONPATH", path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .status()
        .map_err(|error| TestsNotRun(format!("cannot run {}: {error}", python.display())))?;
    match status.code() {
        Some(0) => {
            outln!("result:    ok: the host loads the plugin and its tests pass")?;
            Ok(())
        }
        Some(5) => bail!("pytest collected no tests from {}", tests.join(" ")),
        _ => bail!("the plugin's tests failed (pytest: {status}); the host loads the plugin"),
    }
}
