//! `fidius init-interface`, `fidius init-plugin`, `fidius init-host`: the three crates of a fidius
//! project, each generated so that it builds and runs as is.
//!
//! The loop they set up: `init-interface` writes the trait; `init-plugin` a Python package
//! implementing it (stub, `package.toml`, tests); `init-host` a host that loads every plugin in its
//! `plugins/` folder, so `fidius pack PLUGIN --out HOST/plugins` then `cargo run` in HOST runs it.

use crate::out::outln;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _};
use clap::Args;
use fidius_core::interface::stub::render_stub;
use fidius_core::interface::{InterfaceSource, MethodSpec, WireMode};

use super::python_stub::read_interface;

/// The fidius version generated crates ask for when not given `--fidius-path`.
const FIDIUS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the generated crate goes and how it depends on fidius.
#[derive(Debug, Args)]
struct Placement {
    /// The folder to create [default: ./NAME]. It must not exist yet.
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,

    /// A fidius checkout to depend on by path [default: a version requirement on crates.io].
    #[arg(long, value_name = "CHECKOUT")]
    fidius_path: Option<PathBuf>,
}

impl Placement {
    fn folder(&self, name: &str) -> PathBuf {
        self.path.clone().unwrap_or_else(|| PathBuf::from(name))
    }

    /// The checkout, absolute (generated manifests live elsewhere), after checking it is one.
    fn checkout(&self) -> anyhow::Result<Option<PathBuf>> {
        let Some(checkout) = &self.fidius_path else {
            return Ok(None);
        };
        let checkout = fs::canonicalize(checkout)
            .with_context(|| format!("--fidius-path {}", checkout.display()))?;
        ensure!(
            checkout.join("crates/fidius/Cargo.toml").is_file(),
            "--fidius-path {} is not a fidius checkout (no crates/fidius/Cargo.toml)",
            checkout.display()
        );
        Ok(Some(checkout))
    }

    /// `NAME = { ... }` for the fidius crate `crate_dir` (`fidius`, `fidius-build`).
    fn dependency(&self, crate_dir: &str, features: &[&str]) -> anyhow::Result<String> {
        let source = match self.checkout()? {
            Some(checkout) => format!(
                "path = {}",
                toml_string(&checkout.join("crates").join(crate_dir))
            ),
            None => format!("version = \"{FIDIUS_VERSION}\""),
        };
        let features = match features {
            [] => String::new(),
            names => format!(
                ", features = [{}]",
                names
                    .iter()
                    .map(|name| format!("\"{name}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Ok(format!("{crate_dir} = {{ {source}{features} }}"))
    }
}

/// What `init-plugin` and `init-host` take: the new package's name, the interface it is made for,
/// and where it goes.
#[derive(Debug, Args)]
struct ForInterface {
    /// The new package's name (letters, digits, `-`, `_`); a plugin's module is the name with `-`
    /// as `_`.
    #[arg(value_name = "NAME")]
    name: String,

    /// The interface crate's folder (holding Cargo.toml and src/lib.rs); `init-plugin` also takes
    /// the `.rs` file declaring the trait.
    #[arg(long, value_name = "DIR")]
    interface: PathBuf,

    /// The trait's name.
    #[arg(long = "trait", value_name = "T")]
    trait_name: String,

    #[command(flatten)]
    placement: Placement,
}

impl ForInterface {
    /// Reads the trait from the folder's `src/lib.rs`, or from the given `.rs` file.
    fn read(&self) -> anyhow::Result<InterfaceSource> {
        read_interface(&self.source_file(), &self.trait_name)
    }

    /// The `.rs` file declaring the trait.
    fn source_file(&self) -> PathBuf {
        if self.interface.is_dir() {
            self.interface.join("src/lib.rs")
        } else {
            self.interface.clone()
        }
    }
}

/// Create an interface crate: a `#[plugin_interface]` trait with one example method.
#[derive(Debug, Args)]
pub struct InitInterfaceCommand {
    /// The crate's name (letters, digits, `-`, `_`).
    #[arg(value_name = "NAME")]
    name: String,

    /// The trait's name.
    #[arg(long = "trait", value_name = "T")]
    trait_name: String,

    #[command(flatten)]
    placement: Placement,
}

impl InitInterfaceCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        check_package_name(&self.name)?;
        check_trait_name(&self.trait_name)?;
        let folder = self.placement.folder(&self.name);
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\n{fidius}\n\
             # Structs crossing the wire derive serde's traits:\n\
             # serde = {{ version = \"1\", features = [\"derive\"] }}\n\n\
             # A workspace of its own, so it builds wherever it was created.\n[workspace]\n",
            name = self.name,
            fidius = self.placement.dependency("fidius", &[])?,
        );
        let trait_name = &self.trait_name;
        let lib = format!(
            "//! The `{trait_name}` interface: the contract between hosts and {trait_name} plugins.\n\
             //!\n\
             //! Plugins: `fidius init-plugin NAME --interface . --trait {trait_name}`;\n\
             //! hosts: `fidius init-host NAME --interface . --trait {trait_name}`.\n\n\
             use fidius::plugin_interface;\n\n\
             #[plugin_interface(version = 1)]\n\
             pub trait {trait_name} {{\n    \
                 /// Greets someone by name.\n    \
                 fn greet(&self, name: String) -> String;\n\
             }}\n"
        );
        write_tree(
            &folder,
            &[
                ("Cargo.toml", manifest),
                ("src/lib.rs", lib),
                (".gitignore", "/target\n".to_owned()),
            ],
        )?;
        outln!(
            "created interface crate {} in {}",
            self.name,
            folder.display()
        )?;
        Ok(())
    }
}

/// Create a Python plugin package for an interface: the generated stub, `package.toml`, an empty
/// `requirements.txt` and pytest tests that run against the fidius SDK.
#[derive(Debug, Args)]
pub struct InitPluginCommand {
    #[command(flatten)]
    args: ForInterface,

    /// `python` (a package with the generated stub) or `rust` (a cdylib crate with
    /// `#[plugin_impl]`, built into its package by `fidius package build`).
    #[arg(long, value_enum, default_value_t = PluginRuntime::Python)]
    runtime: PluginRuntime,
}

/// The language `init-plugin` writes the plugin in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PluginRuntime {
    Python,
    Rust,
}

impl InitPluginCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        check_package_name(&self.args.name)?;
        if self.runtime == PluginRuntime::Rust {
            return rust_plugin_crate(&self.args);
        }
        let module = self.args.name.replace('-', "_");
        let interface = self.args.read()?;
        let stub = render_stub(&interface)
            .with_context(|| format!("in {}", self.args.interface.display()))?;
        let spec = &interface.spec;
        let package = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\ninterface = \"{trait_name}\"\n\
             interface_version = {version}\nruntime = \"python\"\n\n\
             [python]\nentry_module = \"{module}\"\nrequirements = \"requirements.txt\"\n",
            name = self.args.name,
            trait_name = spec.trait_name,
            version = spec.version,
        );
        let sdk = match self.args.placement.checkout()? {
            Some(checkout) => format!(
                "{}\n",
                checkout.join("crates/fidius-host/python-sdk").display()
            ),
            // `fidius test` brings the host's SDK; plain pytest needs it installed.
            None => "# For plain `pytest`, the fidius SDK too: the path of \
                     crates/fidius-host/python-sdk in a fidius\n# checkout. `fidius test` needs \
                     only pytest: it brings the host's SDK.\n"
                .to_owned(),
        };
        let interface_file =
            fs::canonicalize(self.args.source_file()).unwrap_or_else(|_| self.args.source_file());
        let methods: Vec<String> = spec
            .methods
            .iter()
            .filter(|method| method.optional_since.is_none())
            .map(|method| format!("\"{}\"", method.name))
            .collect();
        let tests = format!(
            "\"\"\"Tests of the {name} plugin, against the fidius SDK.\n\n\
             Run them with the host's SDK, after checking the plugin as a host would:\n\n    \
             fidius test . --interface {interface} --trait-name {trait_name}\n\n\
             or with `pip install -r dev-requirements.txt`, then `pytest`.\n\"\"\"\n\n\
             import {module}\n\n\n\
             def test_declares_its_interface():\n    \
                 assert {module}.__interface__ == \"{trait_name}\"\n    \
                 assert {module}.__interface_version__ == {version}\n\n\n\
             def test_defines_every_required_method():\n    \
                 for name in [{methods}]:\n        \
                     assert callable(getattr({module}, name, None)), name\n",
            name = self.args.name,
            trait_name = spec.trait_name,
            version = spec.version,
            methods = methods.join(", "),
            interface = interface_file.display(),
        );
        let folder = self.args.placement.folder(&self.args.name);
        write_tree(
            &folder,
            &[
                (format!("{module}.py").as_str(), stub),
                ("package.toml", package),
                ("requirements.txt", String::new()),
                ("dev-requirements.txt", format!("pytest\n{sdk}")),
                // Tests import the plugin module from the package folder.
                (
                    "pytest.ini",
                    "[pytest]\npythonpath = .\ntestpaths = tests\n".to_owned(),
                ),
                (format!("tests/test_{module}.py").as_str(), tests),
                (".gitignore", "/vendor/\n__pycache__/\n*.fid\n".to_owned()),
            ],
        )?;
        outln!(
            "created plugin {} for {} in {}; fill in {}",
            self.args.name,
            spec.trait_name,
            folder.display(),
            folder.join(format!("{module}.py")).display()
        )?;
        Ok(())
    }
}

/// A Rust plugin crate for the interface: Cargo.toml (a cdylib depending on fidius and the
/// interface crate), package.toml (`runtime = "rust"`), and src/lib.rs implementing every method
/// with `todo!()` under `#[plugin_impl]`.
fn rust_plugin_crate(args: &ForInterface) -> anyhow::Result<()> {
    let interface_dir = fs::canonicalize(&args.interface)
        .with_context(|| format!("--interface {}", args.interface.display()))?;
    ensure!(
        interface_dir.is_dir(),
        "--interface {}: a Rust plugin needs the interface crate's folder",
        args.interface.display()
    );
    let interface_crate = crate_name(&interface_dir)?;
    let interface_module = interface_crate.replace('-', "_");
    let interface = args.read()?;
    let spec = &interface.spec;
    let library = format!("lib/lib{}.so", args.name.replace('-', "_"));
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\n{fidius}\n{interface_crate} = {{ path = {interface_path} }}\n\n\
         # A workspace of its own, so it builds wherever it was created.\n[workspace]\n",
        name = args.name,
        fidius = args.placement.dependency("fidius", &[])?,
        interface_path = toml_string(&interface_dir),
    );
    let package = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\ninterface = \"{trait_name}\"\n\
         interface_version = {version}\nruntime = \"rust\"\n\n\
         [rust]\nlibrary = \"{library}\"\nplugin = \"{name}\"\n",
        name = args.name,
        trait_name = spec.trait_name,
        version = spec.version,
    );
    let mut methods = String::new();
    for method in &spec.methods {
        let arguments: String = method
            .args
            .iter()
            .enumerate()
            .map(|(position, arg)| {
                let name = arg.name.clone().unwrap_or_else(|| format!("arg{position}"));
                format!(", {name}: {}", arg.canonical)
            })
            .collect();
        let returns = if method.output_canonical.is_empty() {
            String::new()
        } else {
            format!(" -> {}", method.output_canonical)
        };
        let _ = write!(
            methods,
            "    fn {name}(&self{arguments}){returns} {{\n        todo!(\"{name}\")\n    }}\n\n",
            name = method.name,
        );
    }
    let trait_name = &spec.trait_name;
    let lib = format!(
        "//! The {name} plugin: `{trait_name}` in Rust. It runs in the host process, without\n\
         //! isolation. Build it into its package with `fidius package build .`, then\n\
         //! `fidius pack .` (or put the library itself on a host's search path).\n\n\
         #[allow(unused_imports)]\nuse fidius::PluginError;\n#[allow(unused_imports)]\n\
         use {interface_module}::*;\n\n\
         /// Every call is served by one instance, made with `Default` on first use.\n\
         #[derive(Default)]\npub struct Plugin;\n\n\
         #[fidius::plugin_impl({interface_module}::{trait_name}, name = \"{name}\")]\n\
         #[allow(unused_variables)]\nimpl {trait_name} for Plugin {{\n{methods}}}\n",
        name = args.name,
        methods = methods.trim_end_matches('\n').to_owned() + "\n",
    );
    let folder = args.placement.folder(&args.name);
    write_tree(
        &folder,
        &[
            ("Cargo.toml", manifest),
            ("package.toml", package),
            ("src/lib.rs", lib),
            (".gitignore", "/target\n/lib/\n*.fid\n".to_owned()),
        ],
    )?;
    outln!(
        "created Rust plugin {} for {} in {}; fill in {}, then `fidius package build {}`",
        args.name,
        spec.trait_name,
        folder.display(),
        folder.join("src/lib.rs").display(),
        folder.display()
    )?;
    Ok(())
}

/// Create a host crate that loads every plugin of an interface from its `plugins/` folder and
/// calls each required method through the typed client.
#[derive(Debug, Args)]
pub struct InitHostCommand {
    #[command(flatten)]
    args: ForInterface,
}

impl InitHostCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        check_package_name(&self.args.name)?;
        let interface_dir = fs::canonicalize(&self.args.interface)
            .with_context(|| format!("--interface {}", self.args.interface.display()))?;
        let interface_crate = crate_name(&interface_dir)?;
        let interface = self.args.read()?;
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\n{fidius}\n{interface_crate} = {{ path = {interface_path} }}\n\n\
             # build.rs records libpython's folder as the executable's rpath.\n\
             [build-dependencies]\n{fidius_build}\n\n\
             # A workspace of its own, so it builds wherever it was created.\n[workspace]\n",
            name = self.args.name,
            fidius = self.args.placement.dependency("fidius", &["host"])?,
            interface_path = toml_string(&interface_dir),
            fidius_build = self.args.placement.dependency("fidius-build", &[])?,
        );
        let build = "//! Lets the executable find libpython without LD_LIBRARY_PATH.\n\
                     fn main() {\n    fidius_build::link_python();\n}\n"
            .to_owned();
        let main = host_main(
            &self.args.name,
            &interface_crate.replace('-', "_"),
            &interface,
        );
        let folder = self.args.placement.folder(&self.args.name);
        write_tree(
            &folder,
            &[
                ("Cargo.toml", manifest),
                ("build.rs", build),
                ("src/main.rs", main),
                ("plugins/.gitignore", "*\n!.gitignore\n".to_owned()),
                (".gitignore", "/target\n".to_owned()),
            ],
        )?;
        outln!(
            "created host {} in {}; `fidius pack PLUGIN --out {}` then `cargo run` there",
            self.args.name,
            folder.display(),
            folder.join("plugins").display()
        )?;
        Ok(())
    }
}

fn host_main(name: &str, interface_crate: &str, interface: &InterfaceSource) -> String {
    let trait_name = &interface.spec.trait_name;
    let mut calls = String::new();
    for method in &interface.spec.methods {
        let method_name = &method.name;
        match method.optional_since {
            Some(since) => {
                let _ = writeln!(
                    calls,
                    "        // `{method_name}` is optional (since version {since}): plugins \
                     may lack it (CallError::NotImplemented)."
                );
            }
            None => {
                let _ = writeln!(
                    calls,
                    "        let result = client.{method_name}({args})?;\n        \
                     println!(\"{{}} {method_name}: {{result:?}}\", plugin.name());",
                    args = example_arguments(method)
                );
            }
        }
    }
    format!(
        "//! {name}: loads the {trait_name} plugins in `plugins/` beside Cargo.toml (or in the \
         folder given as\n//! first argument) and calls them through the typed client.\n\
         #![forbid(unsafe_code)]\n\n\
         use std::error::Error;\n\
         use std::path::PathBuf;\n\
         use std::process::ExitCode;\n\n\
         use fidius::host::{{LoadOptions, PluginHost, WorkerCommand}};\n\n\
         use {interface_crate}::__fidius_{trait_name}::{trait_name}_PYTHON_DESCRIPTOR;\n\
         use {interface_crate}::{trait_name}Client;\n\n\
         /// Where plugins are looked for by default: `plugins/` beside this crate's Cargo.toml\n\
         /// (`fidius pack PLUGIN --out plugins`).\n\
         const DEFAULT_PLUGINS: &str = concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/plugins\");\n\n\
         /// Started with this first argument, the executable is a process-tier worker: plugins that\n\
         /// need a process of their own (`isolation = \"process\"`, numpy...) run in copies of it.\n\
         const WORKER_ARG: &str = \"--fidius-worker\";\n\n\
         fn main() -> ExitCode {{\n    \
             let mut args = std::env::args_os().skip(1);\n    \
             if args.next().is_some_and(|arg| arg == WORKER_ARG) {{\n        \
                 return fidius::host::worker::main(args.collect());\n    \
             }}\n    \
             match run() {{\n        \
                 Ok(()) => ExitCode::SUCCESS,\n        \
                 Err(error) => {{\n            \
                     eprintln!(\"error: {{error}}\");\n            \
                     ExitCode::FAILURE\n        \
                 }}\n    \
             }}\n\
         }}\n\n\
         fn run() -> Result<(), Box<dyn Error>> {{\n    \
             let plugins = std::env::args_os()\n        \
                 .nth(1)\n        \
                 .map_or_else(|| PathBuf::from(DEFAULT_PLUGINS), PathBuf::from);\n    \
             // Unsigned packages load; `.require_signature(true).trusted_key(..)` insists on signatures.\n    \
             let host = PluginHost::builder().search_path(&plugins).build()?;\n    \
             let worker = WorkerCommand::new(std::env::current_exe()?).arg(WORKER_ARG);\n    \
             let discovery = host.discover()?;\n    \
             for broken in &discovery.broken {{\n        \
                 eprintln!(\"skipped {{}}: {{}}\", broken.path.display(), broken.error);\n    \
             }}\n    \
             let descriptor = &{trait_name}_PYTHON_DESCRIPTOR;\n    \
             let mut loaded = 0;\n    \
             for plugin in discovery\n        \
                 .plugins\n        \
                 .iter()\n        \
                 .filter(|plugin| plugin.interface() == descriptor.trait_name)\n    \
             {{\n        \
                 let options = LoadOptions::default().worker_command(worker.clone());\n        \
                 let handle = host.load_python_with(plugin.name(), descriptor, options)?;\n        \
                 let tier = handle.tier();\n        \
                 eprintln!(\"{{}}: {{}} tier ({{}})\", plugin.name(), tier.tier, tier.reason);\n        \
                 let client = {trait_name}Client(handle);\n\
         {calls}        \
                 loaded += 1;\n    \
             }}\n    \
             if loaded == 0 {{\n        \
                 return Err(format!(\"no {trait_name} plugin in {{}}\", plugins.display()).into());\n    \
             }}\n    \
             Ok(())\n\
         }}\n"
    )
}

/// Arguments for a generated call: `"World"` for strings, the type's default otherwise (edit them).
fn example_arguments(method: &MethodSpec) -> String {
    method
        .args
        .iter()
        .map(|arg| match (method.wire, arg.canonical.as_str()) {
            (WireMode::TypedJson, "String") => "\"World\".to_owned()",
            _ => "Default::default()",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `[package] name` of the crate in `dir`.
fn crate_name(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("Cargo.toml");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    manifest
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("{} has no [package] name", path.display()))
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.to_string_lossy().into_owned()).to_string()
}

/// Crate and package names: what both cargo and Python (as a module, `-` read as `_`) accept.
fn check_package_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic());
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("{name:?} is not a usable name: use a letter, then letters, digits, `-` or `_`");
    }
    Ok(())
}

fn check_trait_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|first| first.is_ascii_uppercase());
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("--trait {name:?} is not a trait name: use an upper-case letter, then letters, digits or `_`");
    }
    Ok(())
}

/// Writes `files` into a new folder `dir`, all or nothing: they go into a hidden sibling first,
/// renamed to `dir` once complete, so a failure leaves no half-made crate and nothing existing is
/// overwritten.
fn write_tree(dir: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    if dir.exists() {
        bail!("{} already exists; choose another --path", dir.display());
    }
    let name = dir
        .file_name()
        .with_context(|| format!("{} does not name a folder", dir.display()))?;
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    for (relative, contents) in files {
        let path = staging.path().join(relative);
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", dir.join(relative).display()))?;
    }
    let staged = staging.keep();
    if let Err(error) = fs::rename(&staged, dir) {
        let _ = fs::remove_dir_all(&staged);
        return Err(error).with_context(|| format!("cannot create {}", dir.display()));
    }
    Ok(())
}
