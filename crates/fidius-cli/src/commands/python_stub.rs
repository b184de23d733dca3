//! `fidius python-stub`: write a Python plugin skeleton for an interface trait, or check an
//! existing plugin module against it.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{ArgGroup, Args};
use fidius_core::interface::stub::{check_module, render_stub};
use fidius_core::interface::{find_interface, InterfaceSource};

use crate::out::outln;

/// Generate a Python plugin stub from a `#[plugin_interface]` trait, or check a plugin against it.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["out", "check"])))]
pub struct PythonStubCommand {
    /// The Rust source file that declares the trait (nested `mod` blocks are searched too).
    #[arg(long, value_name = "PATH.rs")]
    interface: PathBuf,

    /// The name of the trait.
    #[arg(long, value_name = "T")]
    trait_name: String,

    /// Write the stub to this file (its folder is created if needed); `-` prints it instead.
    #[arg(long, value_name = "FILE.py")]
    out: Option<PathBuf>,

    /// Replace `--out` if it already exists.
    #[arg(long, requires = "out")]
    force: bool,

    /// Check an existing plugin module (hash, method names, arity) instead of writing one; exits
    /// non-zero listing each drift.
    #[arg(long, value_name = "FILE.py")]
    check: Option<PathBuf>,
}

impl PythonStubCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let interface = read_interface(&self.interface, &self.trait_name)?;
        match (&self.out, &self.check) {
            (_, Some(plugin)) => check(&interface, plugin),
            (Some(out), None) => {
                let stub = render_stub(&interface)
                    .with_context(|| format!("in {}", self.interface.display()))?;
                if out.as_os_str() == "-" {
                    // As in the original tool: `--out -` is standard output.
                    std::io::stdout()
                        .write_all(stub.as_bytes())
                        .context("cannot write the stub to standard output")?;
                    return Ok(());
                }
                write_stub(&interface, &stub, out, self.force)
            }
            (None, None) => bail!("pass --out FILE.py or --check FILE.py"),
        }
    }
}

/// Reads the interface trait `trait_name` from the Rust source file at `path`.
pub(crate) fn read_interface(path: &Path, trait_name: &str) -> anyhow::Result<InterfaceSource> {
    let source = fs::read_to_string(path)
        .with_context(|| format!("cannot read interface file {}", path.display()))?;
    find_interface(&source, trait_name).with_context(|| format!("in {}", path.display()))
}

fn write_stub(
    interface: &InterfaceSource,
    stub: &str,
    out: &Path,
    force: bool,
) -> anyhow::Result<()> {
    if out.exists() && !force {
        bail!(
            "{} already exists; pass --force to replace it, or --check to compare it with the interface",
            out.display()
        );
    }
    // Write beside the target and rename, so a failure never leaves a half-written stub.
    let directory = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = out
        .file_name()
        .with_context(|| format!("--out {} does not name a file", out.display()))?;
    fs::create_dir_all(directory)
        .with_context(|| format!("cannot create the folder {}", directory.display()))?;
    let temporary = directory.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let written = fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(stub.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, out));
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("cannot write {}", out.display()));
    }
    outln!(
        "wrote {} for interface {} (hash {:#018x})",
        out.display(),
        interface.spec.trait_name,
        interface.spec.hash
    )?;
    Ok(())
}

fn check(interface: &InterfaceSource, plugin: &Path) -> anyhow::Result<()> {
    let python = fs::read_to_string(plugin)
        .with_context(|| format!("cannot read plugin module {}", plugin.display()))?;
    let drifts = check_module(&interface.spec, &python);
    if drifts.is_empty() {
        outln!(
            "{} matches interface {} (hash {:#018x})",
            plugin.display(),
            interface.spec.trait_name,
            interface.spec.hash
        )?;
        return Ok(());
    }
    let listing: String = drifts
        .iter()
        .map(|drift| format!("\n  - {drift}"))
        .collect();
    bail!(
        "{} does not match interface {}:{listing}",
        plugin.display(),
        interface.spec.trait_name
    )
}
