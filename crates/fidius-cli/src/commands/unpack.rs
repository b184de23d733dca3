//! `fidius package unpack`.

use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use fidius_core::archive::{unpack, UnpackLimits};
use fidius_core::fs::open_archive_file;

use crate::out::outln;

/// Extract a .fid archive (gzip or bzip2) into DEST/NAME-VERSION/.
///
/// Links, device files, absolute paths, `..`, entries outside the single top directory, more
/// than 10,000 entries, more than 512 MiB or a compression ratio over 100:1 are refused, and a
/// refused archive leaves DEST unchanged. Unpacking does not check the signature: use
/// `fidius package verify`.
#[derive(Debug, Args)]
pub struct UnpackCommand {
    /// The archive to extract.
    #[arg(value_name = "FILE.fid")]
    archive: PathBuf,

    /// Directory to extract into (created if missing).
    #[arg(long, value_name = "DIR")]
    dest: PathBuf,
}

impl UnpackCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let (file, _) = open_archive_file(&self.archive)
            .with_context(|| format!("cannot open {}", self.archive.display()))?;
        let unpacked = unpack(BufReader::new(file), &self.dest, &UnpackLimits::default())
            .with_context(|| format!("refused to unpack {}", self.archive.display()))?;
        outln!(
            "unpacked {} to {}",
            self.archive.display(),
            unpacked.root.display()
        )?;
        Ok(())
    }
}
