//! `fidius package validate`.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use fidius_core::manifest::{Manifest, ManifestError};

use crate::out::outln;

/// Check DIR/package.toml; prints "ok" with a summary, or every problem found (exit 1).
#[derive(Debug, Args)]
pub struct ValidateCommand {
    /// The package directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

impl ValidateCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match Manifest::load(&self.dir) {
            Ok(manifest) => {
                let package = &manifest.package;
                let entry = manifest
                    .python
                    .as_ref()
                    .map(|python| {
                        format!(
                            ", entry module {}, isolation {}",
                            python.entry_module, python.isolation
                        )
                    })
                    .unwrap_or_default();
                outln!(
                    "ok: {} {} implements {} v{} (runtime {}{entry})",
                    package.name,
                    package.version,
                    package.interface,
                    package.interface_version,
                    package.runtime
                )?;
                Ok(())
            }
            Err(ManifestError::Invalid { path, problems }) => {
                for problem in &problems {
                    outln!("{}: {problem}", path.display())?;
                }
                bail!("{} has {} problem(s)", path.display(), problems.len())
            }
            Err(other) => Err(other.into()),
        }
    }
}
