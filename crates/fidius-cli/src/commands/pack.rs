//! `fidius pack` / `fidius package pack`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use fidius_core::archive::{pack_dir, SignaturePolicy};
use fidius_core::dist_info::VENDOR_DIR;
use fidius_core::manifest::Manifest;
use fidius_core::tree::SIGNATURE_FILE;

use super::{extensions, read_secret_key, read_trusted_keys};
use crate::python::{choose_python, vendor_requirements, VendorRecord};

use crate::out::outln;

/// Vendor `[python] requirements` into vendor/ (unless vendor/ exists and still matches them) and
/// write NAME-VERSION.fid.
///
/// Each compiled extension module under vendor/ is then imported in an own-GIL sub-interpreter,
/// in a child process, and the results are recorded in extensions.toml (part of the package, so
/// signed with it): hosts use them to run isolation = "auto" plugins in a worker process when an
/// extension cannot run in a sub-interpreter.
///
/// The archive is deterministic: packing the same tree twice gives identical bytes.
/// target/, .git/, __pycache__/ and *.pyc are left out.
#[derive(Debug, Args)]
pub struct PackCommand {
    /// The package directory (holding package.toml).
    #[arg(value_name = "DIR")]
    dir: PathBuf,

    /// Directory to write the .fid into [default: the current directory, as the original fidius
    /// tool does].
    #[arg(long, visible_alias = "output", value_name = "OUTDIR")]
    out: Option<PathBuf>,

    /// Vendor the requirements again even though vendor/ exists (needed after requirements
    /// changed; a hand-made vendor/ is otherwise used as it is).
    #[arg(long)]
    revendor: bool,

    /// Sign the package (after vendoring) with this secret key and include package.sig.
    #[arg(long, value_name = "KEY.secret")]
    key: Option<PathBuf>,

    /// Without --key, include an existing package.sig only if one of these public keys verifies
    /// it. Without either, pack refuses a package.sig older than the files it signs.
    #[arg(long, value_name = "KEY.public", conflicts_with = "key")]
    public_key: Vec<PathBuf>,

    /// Python interpreter whose pip vendors the requirements [default: $FIDIUS_PYTHON, else the
    /// Python fidius was built against].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
}

impl PackCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let manifest = Manifest::load(&self.dir)
            .with_context(|| format!("cannot pack {}", self.dir.display()))?;
        let signing_key = self.key.as_deref().map(read_secret_key).transpose()?;
        let trusted = read_trusted_keys(&self.public_key)?;

        let requirements = manifest
            .python
            .as_ref()
            .and_then(|p| p.requirements.as_ref());
        if let Some(requirements) = requirements {
            let existing = self.dir.join(VENDOR_DIR).exists() && !self.revendor;
            if existing {
                vendored_from(&self.dir, requirements)?;
            } else {
                let python = choose_python(self.python)?;
                vendor_requirements(&python, &self.dir, requirements)?;
                if signing_key.is_none() && self.dir.join(SIGNATURE_FILE).exists() {
                    bail!(
                        "{} was made before vendoring changed the package; re-sign with \
                         `fidius package sign --key KEY.secret {}` or pack with --key",
                        self.dir.join(SIGNATURE_FILE).display(),
                        self.dir.display()
                    );
                }
            }
        }

        if manifest.python.is_some() {
            extensions::record(
                &self.dir,
                match signing_key {
                    Some(_) => extensions::Signing::Follows,
                    None => extensions::Signing::None,
                },
            )?;
        }

        let policy = match (&signing_key, trusted.is_empty()) {
            (Some(key), _) => SignaturePolicy::SignWith(key),
            (None, false) => SignaturePolicy::CheckExisting(&trusted),
            (None, true) => SignaturePolicy::RefuseNewerFiles,
        };
        let out_dir = match self.out {
            Some(out) => out,
            None => default_out_dir()?,
        };
        let packed = pack_dir(&self.dir, &out_dir, policy)
            .with_context(|| format!("cannot pack {}", self.dir.display()))?;
        let signature = match (packed.signed, packed.signed_by) {
            (true, Some(key)) => format!("signed (key {key})"),
            (true, None) => {
                "signed (package.sig included; verify with `fidius package verify`)".to_owned()
            }
            (false, _) => "unsigned".to_owned(),
        };
        outln!(
            "wrote {} ({} files, digest {}, {signature})",
            packed.path.display(),
            packed.file_count,
            packed.digest
        )?;
        Ok(())
    }
}

fn default_out_dir() -> anyhow::Result<PathBuf> {
    std::env::current_dir().context("cannot resolve the current directory")
}

/// Decides whether an existing vendor/ may ship: one that `fidius pack` made records the
/// requirements it was made from, and must still match them; a hand-made one is used as it is.
fn vendored_from(package_dir: &Path, requirements: &Path) -> anyhow::Result<()> {
    match VendorRecord::check(package_dir, requirements)? {
        VendorRecord::Matches => eprintln!(
            "using the existing {VENDOR_DIR}/ (made from the current {})",
            requirements.display()
        ),
        VendorRecord::Absent => eprintln!(
            "using the existing {VENDOR_DIR}/ as it is (not made by `fidius pack`, so it cannot \
             be checked against {}; pass --revendor to vendor again)",
            requirements.display()
        ),
        VendorRecord::Stale => bail!(
            "{} changed since {VENDOR_DIR}/ was vendored from it; pass --revendor to vendor again",
            package_dir.join(requirements).display()
        ),
    }
    Ok(())
}
