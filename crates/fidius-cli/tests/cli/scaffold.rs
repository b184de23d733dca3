//! Crates outside the workspace, as a newcomer makes them: a host depending only on `fidius`
//! (path dependency on this checkout) builds with `cargo build`, starts without LD_LIBRARY_PATH
//! and calls a Python plugin; and `fidius init-interface`/`init-plugin`/`init-host` generate three
//! crates that work as generated (plugin tests under pytest, pack, `cargo build`, run).
//!
//! Builds share one target folder under this workspace's `target/`, so compiled dependencies are
//! reused between runs; the workspace's Cargo.lock is copied in, so `--offline` resolves.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use crate::support::{fails_with, fidius, listing, succeeds, TestResult};

const CHECKOUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Where generated crates are built: outside their own folders, kept between test runs.
pub fn shared_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("outside-workspace-target")
}

pub fn checkout() -> PathBuf {
    fs::canonicalize(CHECKOUT).expect("the checkout exists")
}

/// The Python to build against: the one this test suite was built with, so fidius-ffi's
/// compiled artifacts are reused.
pub fn build_python() -> Option<OsString> {
    std::env::var_os("PYO3_PYTHON").or_else(|| option_env!("FIDIUS_BUILD_PYTHON").map(Into::into))
}

/// `cargo build --offline` in `crate_dir`, returning the executable `target/debug/NAME`.
pub fn cargo_build(crate_dir: &Path, name: &str) -> PathBuf {
    fs::copy(checkout().join("Cargo.lock"), crate_dir.join("Cargo.lock")).expect("copy Cargo.lock");
    let mut command = cargo(crate_dir);
    command
        .args(["build", "--offline", "--quiet"])
        .env("CARGO_TARGET_DIR", shared_target())
        .env_remove("LD_LIBRARY_PATH");
    if let Some(python) = build_python() {
        command.env("PYO3_PYTHON", python);
    }
    let started = Instant::now();
    let output = command.output().expect("run cargo");
    eprintln!(
        "cargo build of {name}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_succeeded("cargo build", &output);
    shared_target().join("debug").join(name)
}

/// `cargo` in `crate_dir`, without the outer cargo's per-package variables.
pub fn cargo(crate_dir: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(crate_dir);
    clear_cargo_env(&mut command);
    command
}

/// Removes the outer cargo's per-package variables from `command`'s environment.
pub fn clear_cargo_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key.starts_with("DEP_") {
            command.env_remove(key.as_ref());
        }
    }
}

/// A virtual environment at `venv` from the build's Python, with `pip install PIP_ARGS` run in
/// `cwd`; returns its interpreter.
pub fn make_venv(venv: &Path, pip_args: &[&str], cwd: &Path) -> PathBuf {
    let python = build_python().expect("PYO3_PYTHON or the build's Python");
    let created = Command::new(&python)
        .args(["-m", "venv"])
        .arg(venv)
        .output()
        .expect("run python -m venv");
    assert_succeeded("python -m venv", &created);
    let venv_python = venv.join("bin/python");
    let installed = Command::new(&venv_python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(pip_args)
        .current_dir(cwd)
        .output()
        .expect("run pip");
    assert_succeeded(&format!("pip install {}", pip_args.join(" ")), &installed);
    venv_python
}

/// Runs a built host the way a user would: no LD_LIBRARY_PATH, and its archive cache in `home`.
pub fn run_host(executable: &Path, args: &[&Path], home: &Path) -> String {
    String::from_utf8_lossy(&run_host_output(executable, args, home).stdout).into_owned()
}

/// [`run_host`], asserting success and returning both streams.
pub fn run_host_output(executable: &Path, args: &[&Path], home: &Path) -> Output {
    let output = Command::new(executable)
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env("HOME", home)
        .output()
        .expect("run the host");
    assert_succeeded("the host", &output);
    output
}

pub fn assert_succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn write(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, contents)
}

/// The stub's generated body for `greet`, filled in.
pub fn fill_in_greet(module: &Path) -> TestResult {
    let stub = fs::read_to_string(module)?;
    assert!(stub.contains("raise NotImplementedError"), "{stub}");
    fs::write(
        module,
        stub.replace("raise NotImplementedError", "return f\"Hello, {name}!\""),
    )?;
    Ok(())
}

/// The facade's example host, as a crate of its own outside the workspace: `fidius` with feature
/// `host` plus the one-line build.rs is all the setup, and it starts without LD_LIBRARY_PATH.
#[test]
fn a_host_outside_the_workspace_builds_and_runs_with_only_fidius() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let host = scratch.path().join("outside-host");
    let crates = checkout().join("crates");
    let manifest = format!(
        "[package]\nname = \"outside-host\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nfidius = {{ path = {fidius:?}, features = [\"host\"] }}\n\n\
         [build-dependencies]\nfidius-build = {{ path = {build:?} }}\n\n[workspace]\n",
        fidius = crates.join("fidius"),
        build = crates.join("fidius-build"),
    );
    write(&host.join("Cargo.toml"), &manifest)?;
    write(
        &host.join("build.rs"),
        "fn main() {\n    fidius_build::link_python();\n}\n",
    )?;
    let main = host.join("src/main.rs");
    fs::create_dir_all(host.join("src"))?;
    fs::copy(crates.join("fidius/examples/minimal_host.rs"), &main)?;

    // A Python plugin for the example's trait, stub generated from the host's own source.
    let plugins = scratch.path().join("plugins");
    let plugin = plugins.join("hello");
    write(
        &plugin.join("package.toml"),
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\ninterface = \"Greeter\"\n\
         interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"greeter\"\n",
    )?;
    let module = plugin.join("greeter.py");
    succeeds(&fidius(
        scratch.path(),
        &[
            "python-stub",
            "--interface",
            &main.to_string_lossy(),
            "--trait-name",
            "Greeter",
            "--out",
            &module.to_string_lossy(),
        ],
    ));
    fill_in_greet(&module)?;

    let executable = cargo_build(&host, "outside-host");
    let stdout = run_host(&executable, &[&plugins], scratch.path());
    assert_eq!(stdout, "hello: Hello, World!\n");
    Ok(())
}

/// The scaffolding loop of the README: three `fidius init-*` commands, the plugin's generated
/// tests under pytest with the SDK, `fidius pack PLUGIN --out HOST/plugins`, then the host.
#[test]
fn init_interface_plugin_and_host_make_a_working_project() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let work = scratch.path();
    let checkout = checkout();
    let checkout = checkout.to_string_lossy();
    for args in [
        &["init-interface", "greeter-api", "--trait", "Greeter"][..],
        &[
            "init-plugin",
            "my-greeter",
            "--interface",
            "greeter-api",
            "--trait",
            "Greeter",
        ],
        &[
            "init-host",
            "greeter-host",
            "--interface",
            "greeter-api",
            "--trait",
            "Greeter",
        ],
    ] {
        let mut args = args.to_vec();
        args.extend(["--fidius-path", &checkout]);
        succeeds(&fidius(work, &args));
    }
    // Generated Rust is formatted as `cargo fmt` would have it.
    for crate_dir in ["greeter-api", "greeter-host"] {
        let formatted = cargo(&work.join(crate_dir))
            .args(["fmt", "--check"])
            .output()?;
        assert_succeeded(&format!("cargo fmt --check in {crate_dir}"), &formatted);
    }
    let plugin = work.join("my-greeter");
    fill_in_greet(&plugin.join("my_greeter.py"))?;

    // The generated tests, with pytest and the SDK from the generated dev-requirements.txt.
    let venv = work.join("venv");
    make_venv(&venv, &["-r", "dev-requirements.txt"], &plugin);
    let tested = Command::new(venv.join("bin/python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(&plugin)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()?;
    assert_succeeded("pytest", &tested);
    assert!(
        String::from_utf8_lossy(&tested.stdout).contains("2 passed"),
        "{}",
        String::from_utf8_lossy(&tested.stdout)
    );

    let host = work.join("greeter-host");
    succeeds(&fidius(
        work,
        &["pack", "my-greeter", "--out", "greeter-host/plugins"],
    ));
    let executable = cargo_build(&host, "greeter-host");
    // No argument: the host searches `plugins/` beside its Cargo.toml.
    let greets_in_tier = |tier: &str| {
        let output = run_host_output(&executable, &[], work);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "my-greeter greet: \"Hello, World!\"\n"
        );
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(log.contains(&format!("my-greeter: {tier} tier (")), "{log}");
    };
    greets_in_tier("subinterpreter");

    // The same plugin forced into the process tier: the generated host is its own worker, so
    // nothing else has to be built or installed.
    let manifest = plugin.join("package.toml");
    let text = fs::read_to_string(&manifest)?;
    fs::write(
        &manifest,
        text.replace("[python]\n", "[python]\nisolation = \"process\"\n"),
    )?;
    succeeds(&fidius(
        work,
        &["pack", "my-greeter", "--out", "greeter-host/plugins"],
    ));
    greets_in_tier("process");
    Ok(())
}

/// Bad input is one clear error, and a refused `init-*` leaves nothing behind: no folder, no
/// staging leftovers, nothing overwritten.
#[test]
fn init_refuses_bad_input_and_leaves_nothing_behind() -> TestResult {
    let scratch = tempfile::tempdir()?;
    let work = scratch.path();
    succeeds(&fidius(
        work,
        &["init-interface", "api", "--trait", "Greeter"],
    ));
    let lib = fs::read_to_string(work.join("api/src/lib.rs"))?;

    fails_with(
        &fidius(work, &["init-interface", "api", "--trait", "Other"]),
        &["api already exists"],
    );
    fails_with(
        &fidius(work, &["init-interface", "other", "--trait", "lower"]),
        &["--trait \"lower\""],
    );
    fails_with(
        &fidius(work, &["init-interface", "9lives", "--trait", "Greeter"]),
        &["\"9lives\" is not a usable name"],
    );
    fails_with(
        &fidius(
            work,
            &[
                "init-plugin",
                "plugin",
                "--interface",
                "api",
                "--trait",
                "Missing",
            ],
        ),
        &["Missing"],
    );
    fails_with(
        &fidius(
            work,
            &[
                "init-host",
                "host",
                "--interface",
                "nowhere",
                "--trait",
                "Greeter",
            ],
        ),
        &["--interface nowhere"],
    );
    let not_a_checkout = work.to_string_lossy();
    fails_with(
        &fidius(
            work,
            &[
                "init-host",
                "host",
                "--interface",
                "api",
                "--trait",
                "Greeter",
            ]
            .into_iter()
            .chain(["--fidius-path", &not_a_checkout])
            .collect::<Vec<_>>(),
        ),
        &["is not a fidius checkout"],
    );

    assert_eq!(listing(work)?, ["api"]);
    assert_eq!(fs::read_to_string(work.join("api/src/lib.rs"))?, lib);
    Ok(())
}
