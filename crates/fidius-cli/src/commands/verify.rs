//! `fidius package verify`.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use fidius_core::archive::{verify_archive, UnpackLimits};
use fidius_core::signing::{verify_dir, VerifiedSignature, VerifyingKey};

use super::read_trusted_keys;

use crate::out::outln;

/// Check that each package's package.sig was made by a trusted key over its current contents.
///
/// Prints "signature ok (key FINGERPRINT)" per package. Exits non-zero if any package is
/// unsigned, badly signed, signed by another key or changed since signing; the other packages
/// are still checked. A .fid is checked in a temporary directory that is removed afterwards.
#[derive(Debug, Args)]
pub struct VerifyCommand {
    /// Trusted public key; repeat to trust several.
    #[arg(long = "key", value_name = "KEY.public", required = true)]
    keys: Vec<PathBuf>,

    /// Package directories or .fid archives.
    #[arg(value_name = "DIR|FILE.fid", required = true)]
    packages: Vec<PathBuf>,
}

impl VerifyCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let trusted = read_trusted_keys(&self.keys)?;
        let mut failures = 0;
        for package in &self.packages {
            match verify_one(package, &trusted) {
                Ok(verified) => {
                    outln!("{}: signature ok (key {})", package.display(), verified.key)?
                }
                Err(error) => {
                    failures += 1;
                    eprintln!("{}: verification failed: {error:#}", package.display());
                }
            }
        }
        if failures > 0 {
            bail!(
                "{failures} of {} packages failed verification",
                self.packages.len()
            );
        }
        Ok(())
    }
}

fn verify_one(
    package: &std::path::Path,
    trusted: &[VerifyingKey],
) -> anyhow::Result<VerifiedSignature> {
    if package.is_dir() {
        Ok(verify_dir(package, trusted)?)
    } else {
        Ok(verify_archive(package, trusted, &UnpackLimits::default())?)
    }
}
