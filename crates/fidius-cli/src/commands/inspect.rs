//! `fidius package inspect`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use fidius_core::dist_info::vendored_distributions;
use fidius_core::manifest::Manifest;
use fidius_core::signing::verify_dir;
use fidius_core::tree::{PackageTree, Selection};

use super::{extensions, open_package, read_trusted_keys};

use crate::out::outln;

/// Show a package's manifest, files with sizes, signature status, vendored distributions, and
/// which tier its plugin runs in (from extensions.toml; inspect never runs package code).
#[derive(Debug, Args)]
pub struct InspectCommand {
    /// A package directory or .fid archive.
    #[arg(value_name = "DIR|FILE.fid")]
    package: PathBuf,

    /// Check package.sig against this public key and show its fingerprint (package.sig names no
    /// key, so without one inspect can only say whether it is present).
    #[arg(long = "key", value_name = "KEY.public")]
    keys: Vec<PathBuf>,

    /// List every file; by default what vendor/ holds is summarised per top-level package.
    #[arg(long)]
    files: bool,
}

impl InspectCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let trusted = read_trusted_keys(&self.keys)?;
        let opened = open_package(&self.package)?;
        let root = &opened.root;
        let context = || format!("cannot inspect {}", self.package.display());
        let manifest = Manifest::load(root).with_context(context)?;
        let tree = PackageTree::scan(root, Selection::Archive).with_context(context)?;

        let package = &manifest.package;
        outln!("package:     {} {}", package.name, package.version)?;
        outln!(
            "interface:   {} v{}",
            package.interface,
            package.interface_version
        )?;
        outln!("runtime:     {}", package.runtime)?;
        if let Some(python) = &manifest.python {
            outln!(
                "entry:       {} (isolation {})",
                python.entry_module,
                python.isolation
            )?;
            if let Some(requirements) = &python.requirements {
                outln!("requires:    {}", requirements.display())?;
            }
        }
        for (key, value) in &manifest.metadata {
            outln!("metadata:    {key} = {value}")?;
        }

        let signature = match (tree.signature_file(), trusted.is_empty()) {
            (None, _) => "unsigned".to_owned(),
            (Some(_), true) => "package.sig present (pass --key to check it)".to_owned(),
            (Some(_), false) => match verify_dir(root, &trusted) {
                Ok(verified) => format!("signature ok (key {})", verified.key),
                Err(error) => format!("BAD: {error}"),
            },
        };
        outln!("signature:   {signature}")?;
        if let Some(python) = &manifest.python {
            extensions::show(root, python.isolation).with_context(context)?;
        }

        let vendored = vendored_distributions(root).with_context(context)?;
        if !vendored.is_empty() {
            outln!("vendored:")?;
            for distribution in vendored {
                outln!("  {} {}", distribution.name, distribution.version)?;
            }
        }
        outln!("files:")?;
        for (len, path, count) in file_listing(&tree.files, self.files) {
            match count {
                Some(1) => outln!("  {len:>10}  {path} (1 file)")?,
                Some(count) => outln!("  {len:>10}  {path} ({count} files)")?,
                None => outln!("  {len:>10}  {path}")?,
            }
        }
        outln!(
            "total:       {} bytes in {} files",
            tree.total_len(),
            tree.files.len()
        )?;
        if !tree.uncovered.is_empty() {
            // Shown so nothing in the tree hides from a reviewer; pack leaves these out and
            // verification refuses a package holding them.
            outln!("not covered by the digest (left out of archives, refused when verified):")?;
            for path in &tree.uncovered {
                outln!("  {path}")?;
            }
        }
        Ok(())
    }
}

/// `(bytes, path, file count)` rows in path order: every file, or (by default) each folder in
/// vendor/ folded into one row, since a vendored dependency can have thousands of files.
fn file_listing(
    files: &[fidius_core::tree::PackageFile],
    every_file: bool,
) -> Vec<(u64, String, Option<usize>)> {
    let vendor = format!("{}/", fidius_core::dist_info::VENDOR_DIR);
    let mut rows: Vec<(u64, String, Option<usize>)> = Vec::new();
    for file in files {
        let folder = file
            .relative_path
            .strip_prefix(&vendor)
            .and_then(|inside| inside.split_once('/'))
            .filter(|_| !every_file)
            .map(|(top, _)| format!("{vendor}{top}/"));
        match (folder, rows.last_mut()) {
            (Some(folder), Some((len, path, Some(count)))) if *path == folder => {
                *len += file.len;
                *count += 1;
            }
            (Some(folder), _) => rows.push((file.len, folder, Some(1))),
            (None, _) => rows.push((file.len, file.relative_path.clone(), None)),
        }
    }
    rows
}
