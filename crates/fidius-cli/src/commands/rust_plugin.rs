//! Rust cdylib plugins: `fidius package build` (cargo build, then the library into the package),
//! `fidius sign FILE` and `fidius verify FILE` (detached signatures of bare libraries, as the
//! original fidius writes them).

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use clap::Args;
use fidius_core::fs::{read_regular_file, read_regular_text, MAX_MANIFEST_BYTES};
use fidius_core::manifest::{Manifest, MANIFEST_FILE};
use fidius_core::signing::{detached_signature_path, sign_file, verify_file};

use super::{read_secret_key, read_trusted_keys};
use crate::out::outln;

/// The largest library `fidius sign` and `fidius verify` read (as a host does).
const MAX_LIBRARY_BYTES: u64 = 512 << 20;

/// Build a `runtime = "rust"` package: `cargo build --release` in DIR, then the cdylib it
/// produces is copied to the `[rust] library` path of DIR/package.toml.
#[derive(Debug, Args)]
pub struct BuildCommand {
    /// The package directory (holding package.toml and the crate's Cargo.toml).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

impl BuildCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let manifest_path = self.dir.join(MANIFEST_FILE);
        // Parsed without the file checks: the library it names is what this builds.
        let text = read_regular_text(&manifest_path, MAX_MANIFEST_BYTES)?;
        let manifest = Manifest::parse(&text, &manifest_path)?;
        let Some(rust) = manifest.rust.as_ref() else {
            bail!(
                "{} has no [rust] table: `fidius package build` builds runtime = \"rust\" packages",
                manifest_path.display()
            );
        };
        let built = cargo_build_cdylib(&self.dir)?;
        let target = self.dir.join(&rust.library);
        let folder = target.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        // Copied then renamed, so a host never sees half a library.
        let staged = tempfile::NamedTempFile::new_in(folder)
            .with_context(|| format!("cannot write into {}", folder.display()))?;
        std::fs::copy(&built, staged.path())
            .with_context(|| format!("cannot copy {}", built.display()))?;
        staged
            .persist(&target)
            .with_context(|| format!("cannot write {}", target.display()))?;
        outln!("built {} -> {}", manifest.package.name, target.display())?;
        Ok(())
    }
}

/// Runs `cargo build --release` for the crate in `dir` and returns the cdylib it built.
fn cargo_build_cdylib(dir: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    let mut libraries = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("cannot read cargo's output")?;
            libraries.extend(cdylib_of(&line));
        }
    }
    let status = child.wait().context("cargo did not finish")?;
    if !status.success() {
        bail!(
            "cargo build --release failed in {} ({status})",
            dir.display()
        );
    }
    match libraries.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "cargo built no cdylib in {}: its Cargo.toml needs [lib] crate-type = [\"cdylib\"]",
            dir.display()
        ),
        _ => bail!(
            "cargo built several cdylibs in {}: {}",
            dir.display(),
            libraries
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The `.so` of a `compiler-artifact` message for a cdylib target, if `line` is one.
fn cdylib_of(line: &str) -> Vec<PathBuf> {
    let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
        return Vec::new();
    };
    let is_cdylib = message["reason"] == "compiler-artifact"
        && message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "cdylib"));
    if !is_cdylib {
        return Vec::new();
    }
    message["filenames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|name| name.as_str())
        .filter(|name| name.ends_with(".so"))
        .map(PathBuf::from)
        .collect()
}

/// Sign a bare plugin library: writes FILE.sig, 64 raw Ed25519 bytes over the file's bytes (the
/// original fidius's format). A host with trusted keys verifies it before mapping the library.
#[derive(Debug, Args)]
pub struct SignFileCommand {
    /// Secret key from `fidius keygen`.
    #[arg(long, value_name = "KEY.secret")]
    key: PathBuf,

    /// The library (e.g. libmy_plugin.so).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

impl SignFileCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let key = read_secret_key(&self.key)?;
        let bytes = read_regular_file(&self.file, MAX_LIBRARY_BYTES)
            .with_context(|| format!("cannot sign {}", self.file.display()))?;
        let signature = sign_file(&self.file, &bytes, &key)
            .with_context(|| format!("cannot sign {}", self.file.display()))?;
        outln!("signed {} -> {}", self.file.display(), signature.display())?;
        Ok(())
    }
}

/// Check a bare library's FILE.sig against trusted public keys.
#[derive(Debug, Args)]
pub struct VerifyFileCommand {
    /// Trusted public key; repeat to trust several.
    #[arg(long = "key", value_name = "KEY.public", required = true)]
    keys: Vec<PathBuf>,

    /// The library (its signature is FILE.sig).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

impl VerifyFileCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let trusted = read_trusted_keys(&self.keys)?;
        let bytes = read_regular_file(&self.file, MAX_LIBRARY_BYTES)
            .with_context(|| format!("cannot verify {}", self.file.display()))?;
        let key = verify_file(&self.file, &bytes, &trusted).with_context(|| {
            format!(
                "{}: verification of {} failed",
                self.file.display(),
                detached_signature_path(&self.file).display()
            )
        })?;
        outln!("{}: signature ok (key {key})", self.file.display())?;
        Ok(())
    }
}
