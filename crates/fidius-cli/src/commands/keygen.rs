//! `fidius keygen`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use fidius_core::signing::{generate_signing_key, write_key_pair, KeyFingerprint, Overwrite};

use crate::out::outln;

/// Generate an Ed25519 key pair: OUT.secret (32 raw bytes, mode 0600) and OUT.public (32 raw bytes).
#[derive(Debug, Args)]
pub struct KeygenCommand {
    /// Path prefix for the two key files.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,

    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
}

impl KeygenCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let overwrite = if self.force {
            Overwrite::Replace
        } else {
            Overwrite::Refuse
        };
        let key = generate_signing_key();
        let files = write_key_pair(&self.out, &key, overwrite)
            .context("cannot write the key pair (pass --force to overwrite existing keys)")?;
        outln!("secret key: {}", files.secret.display())?;
        outln!("public key: {}", files.public.display())?;
        outln!("fingerprint: {}", KeyFingerprint::of(&key.verifying_key()))?;
        Ok(())
    }
}
