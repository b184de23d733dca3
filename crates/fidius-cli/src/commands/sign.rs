//! `fidius package sign`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use fidius_core::manifest::Manifest;
use fidius_core::signing::sign_dir;

use super::read_secret_key;

use crate::out::outln;

/// Sign a package directory: writes DIR/package.sig, 64 raw Ed25519 bytes over the package digest.
///
/// Sign after vendoring: any later change to the package invalidates the signature.
#[derive(Debug, Args)]
pub struct SignCommand {
    /// Secret key from `fidius keygen`.
    #[arg(long, value_name = "KEY.secret")]
    key: PathBuf,

    /// The package directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

impl SignCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let key = read_secret_key(&self.key)?;
        Manifest::load(&self.dir).with_context(|| format!("cannot sign {}", self.dir.display()))?;
        let signed = sign_dir(&self.dir, &key)
            .with_context(|| format!("cannot sign {}", self.dir.display()))?;
        outln!(
            "signed {} (key {}, digest {})",
            self.dir.display(),
            signed.key,
            signed.digest
        )?;
        Ok(())
    }
}
