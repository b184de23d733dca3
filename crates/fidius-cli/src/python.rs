//! Finding the Python that the host embeds, and vendoring requirements with its pip.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use fidius_core::dist_info::VENDOR_DIR;
use fidius_core::fs::{read_regular_text, FileError};

/// Environment variable naming the Python to vendor with, when `--python` is not given.
pub const PYTHON_ENV: &str = "FIDIUS_PYTHON";

/// The interpreter fidius was built against (see build.rs).
const BUILD_PYTHON: Option<&str> = option_env!("FIDIUS_BUILD_PYTHON");

/// `--python`, else `$FIDIUS_PYTHON`, else the interpreter fidius was built against, so that
/// vendored wheels match the host's Python ABI.
pub fn choose_python(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    choose_python_from(flag, std::env::var_os(PYTHON_ENV))
}

fn choose_python_from(flag: Option<PathBuf>, env: Option<OsString>) -> anyhow::Result<PathBuf> {
    flag.or_else(|| env.filter(|value| !value.is_empty()).map(PathBuf::from))
        .or_else(|| BUILD_PYTHON.map(PathBuf::from))
        .context(
            "no Python interpreter to vendor with: pass --python PATH or set FIDIUS_PYTHON \
             (this fidius was built without one)",
        )
}

/// The file in vendor/ recording what it was made from: the SHA-256 of the requirements file.
const VENDOR_RECORD: &str = ".fidius-requirements.sha256";

/// What an existing vendor/ says about the requirements it was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorRecord {
    /// Made by `fidius pack` from the requirements file as it is now.
    Matches,
    /// Made by `fidius pack` from a different requirements file.
    Stale,
    /// No record: made by hand (or by an older fidius).
    Absent,
}

impl VendorRecord {
    pub fn check(package_dir: &Path, requirements: &Path) -> anyhow::Result<Self> {
        let record = package_dir.join(VENDOR_DIR).join(VENDOR_RECORD);
        // A package file like any other: read as a bounded regular file (one hash and a newline).
        let recorded = match read_regular_text(&record, 256) {
            Ok(text) => text,
            Err(FileError::NotFound { .. }) => return Ok(Self::Absent),
            Err(error) => return Err(error.into()),
        };
        let current = requirements_digest(&package_dir.join(requirements))?;
        Ok(if recorded.trim() == current {
            Self::Matches
        } else {
            Self::Stale
        })
    }
}

/// The most a `requirements.txt` may hold (a pinned list of thousands of packages is far less).
const MAX_REQUIREMENTS_BYTES: u64 = 1 << 20;

fn requirements_digest(path: &Path) -> anyhow::Result<String> {
    use sha2::{Digest as _, Sha256};
    let content = fidius_core::fs::read_regular_file(path, MAX_REQUIREMENTS_BYTES)?;
    Ok(hex::encode(Sha256::digest(&content)))
}

/// Runs `PYTHON -m pip install -r REQUIREMENTS --target vendor/` in `package_dir`, streaming
/// pip's output to stderr. pip installs into a staging directory that is renamed to `vendor/`
/// only on success, so a failure leaves no half-filled `vendor/` (and an existing one, when
/// vendoring again, stays until the new one is complete). Console scripts (`vendor/bin/`) are
/// dropped: nothing can run them inside a plugin, and their shebangs name the packer's Python.
pub fn vendor_requirements(
    python: &Path,
    package_dir: &Path,
    requirements: &Path,
) -> anyhow::Result<()> {
    let vendor = package_dir.join(VENDOR_DIR);
    let staging = tempfile::Builder::new()
        .prefix(".fidius-vendor-")
        .tempdir_in(package_dir)
        .with_context(|| {
            format!(
                "cannot create a staging directory in {}",
                package_dir.display()
            )
        })?;
    eprintln!(
        "vendoring {} into {} with {}",
        requirements.display(),
        vendor.display(),
        python.display()
    );
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            // pip --target writes into a folder we own; its warning about running as root is noise.
            "--root-user-action=ignore",
        ])
        .arg("--no-compile")
        .arg("--target")
        .arg(staging.path())
        .arg("--requirement")
        .arg(requirements)
        .current_dir(package_dir)
        .stdin(Stdio::null())
        // pip's progress goes to our stderr, keeping stdout for fidius's own result lines.
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("cannot run {} -m pip", python.display()))?;
    if !status.success() {
        bail!(
            "pip failed ({status}) installing {}; {} was not created",
            requirements.display(),
            vendor.display()
        );
    }
    let scripts = staging.path().join("bin");
    if scripts.is_dir() {
        fs::remove_dir_all(&scripts)
            .with_context(|| format!("cannot remove {}", scripts.display()))?;
    }
    fs::write(
        staging.path().join(VENDOR_RECORD),
        requirements_digest(&package_dir.join(requirements))? + "\n",
    )
    .with_context(|| format!("cannot record what {} was made from", vendor.display()))?;
    // Vendoring again: the old vendor/ moves aside only once the new one is complete.
    let previous = package_dir.join(".fidius-vendor-previous");
    if vendor.exists() {
        let _ = fs::remove_dir_all(&previous);
        fs::rename(&vendor, &previous)
            .with_context(|| format!("cannot move the old {} aside", vendor.display()))?;
    }
    fs::rename(staging.path(), &vendor)
        .with_context(|| format!("cannot move vendored packages to {}", vendor.display()))?;
    if previous.exists() {
        fs::remove_dir_all(&previous)
            .with_context(|| format!("cannot remove the old vendor/ at {}", previous.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_environment_beats_build() -> anyhow::Result<()> {
        let chosen = choose_python_from(Some("/flag/python".into()), Some("/env/python".into()))?;
        assert_eq!(chosen, PathBuf::from("/flag/python"));
        let chosen = choose_python_from(None, Some("/env/python".into()))?;
        assert_eq!(chosen, PathBuf::from("/env/python"));
        let fallback = choose_python_from(None, Some(OsString::new()));
        assert_eq!(fallback.ok(), BUILD_PYTHON.map(PathBuf::from));
        Ok(())
    }
}
