//! One module per subcommand; each turns its arguments into library calls in `execute`.

pub mod cache;
pub mod call;
mod extensions;
pub mod init;
pub mod inspect;
pub mod keygen;
pub mod pack;
pub mod package;
pub mod python_stub;
pub mod rust_plugin;
pub mod sign;
mod stream_in;
pub mod test;
mod units;
pub mod unpack;
pub mod validate;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use fidius_core::archive::{unpack_to_scratch, ScratchPackage, UnpackLimits};
use fidius_core::signing::{read_signing_key, read_verifying_key, SigningKey, VerifyingKey};

/// Both halves of a key pair are 32 raw bytes, so the file name is the only guard against
/// signing with a public key or trusting a secret one.
fn refuse_swapped_key(path: &Path, wrong_extension: &str, wanted: &str) -> anyhow::Result<()> {
    if path.extension().is_some_and(|ext| ext == wrong_extension) {
        bail!(
            "{} looks like a {wrong_extension} key; pass the .{wanted} file",
            path.display()
        );
    }
    Ok(())
}

/// Reads `--key FILE.secret`.
fn read_secret_key(path: &Path) -> anyhow::Result<SigningKey> {
    refuse_swapped_key(path, "public", "secret")?;
    read_signing_key(path).context("cannot load secret key")
}

/// Reads every `--key FILE.public`.
fn read_trusted_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<VerifyingKey>> {
    paths
        .iter()
        .map(|path| {
            refuse_swapped_key(path, "secret", "public")?;
            read_verifying_key(path).context("cannot load public key")
        })
        .collect()
}

/// A package given as a directory or as a `.fid` archive unpacked to a temporary directory.
struct OpenedPackage {
    root: PathBuf,
    _scratch: Option<ScratchPackage>,
}

fn open_package(path: &Path) -> anyhow::Result<OpenedPackage> {
    if path.is_dir() {
        return Ok(OpenedPackage {
            root: path.to_path_buf(),
            _scratch: None,
        });
    }
    let scratch = unpack_to_scratch(path, &UnpackLimits::default())
        .with_context(|| format!("cannot read archive {}", path.display()))?;
    Ok(OpenedPackage {
        root: scratch.root.clone(),
        _scratch: Some(scratch),
    })
}
