//! The README tutorial, step by step, with the real `fidius` binary, real archives and keys, and a
//! host that requires signatures: interface → python-stub → plugin → package.toml → pack → keygen →
//! sign → pack → PluginHost → calls by index and through the typed client.

use std::fs;
use std::path::Path;

use fidius_core::CallError;
use fidius_host::{PluginCall, PluginHost, PublicKey};

use crate::support::{fidius, succeeds, TestResult};

/// Step 1, the interface crate: the tutorial's Greeter. `python-stub` reads this same file, so the
/// hash the stub carries and the one compiled into the descriptor come from one source.
mod greeter {
    include!("../../../fidius-macro/tests/fixtures/greeter.rs");
}
const INTERFACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fidius-macro/tests/fixtures/greeter.rs"
);

use greeter::__fidius_Greeter::Greeter_PYTHON_DESCRIPTOR;
use greeter::GreeterClient;

/// Step 2's plugin module, inside the package directory.
const MODULE: &str = "my-greeter-py/greeter.py";

/// Step 3: the manifest exactly as the tutorial writes it, without requirements (vendoring has its
/// own tests, and this one then needs no network).
const MANIFEST: &str = "[package]\nname = \"my-greeter\"\nversion = \"0.1.0\"\n\
    interface = \"Greeter\"\ninterface_version = 1\nruntime = \"python\"\n\n\
    [python]\nentry_module = \"greeter\"\n";

const GENERATED_GREET: &str =
    "    \"\"\"Greets someone by name.\"\"\"\n    raise NotImplementedError\n";
const TUTORIAL_GREET: &str = "    \"\"\"Greets someone by name.\"\"\"\n    if not name:\n        \
    raise PluginError(\"EMPTY_INPUT\", \"name must not be empty\")\n    return f\"Hello, {name}!\"\n";

/// Runs `fidius ARGS` in `cwd`, asserts success and returns stdout.
fn step(cwd: &Path, args: &[&str]) -> String {
    succeeds(&fidius(cwd, args))
}

/// `fidius python-stub` for the Greeter and the plugin's module; `mode` is `--out` or `--check`.
fn python_stub(cwd: &Path, mode: &str) -> String {
    step(
        cwd,
        &[
            "python-stub",
            "--interface",
            INTERFACE,
            "--trait-name",
            "Greeter",
            mode,
            MODULE,
        ],
    )
}

fn expect_empty_input<T: std::fmt::Debug>(result: Result<T, CallError>) {
    match result {
        Err(CallError::Plugin(error)) => {
            assert_eq!(error.code, "EMPTY_INPUT");
            assert_eq!(error.message, "name must not be empty");
        }
        other => panic!("expected CallError::Plugin(EMPTY_INPUT), got {other:?}"),
    }
}

#[test]
fn tutorial_from_interface_to_signed_plugin_to_typed_calls() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    let hash = format!("{:#018x}", Greeter_PYTHON_DESCRIPTOR.interface_hash);

    // Step 2: generate the stub, fill in `greet` as the tutorial does, check it still matches.
    fs::create_dir(cwd.join("my-greeter-py"))?;
    let wrote = python_stub(cwd, "--out");
    assert!(wrote.contains(&format!("(hash {hash})")), "{wrote}");
    let stub = fs::read_to_string(cwd.join(MODULE))?;
    assert!(
        stub.contains(&format!("__interface_hash__ = {hash}\n")),
        "the stub's hash differs from the compiled descriptor's ({hash}):\n{stub}"
    );
    assert_eq!(stub.matches(GENERATED_GREET).count(), 1, "{stub}");
    fs::write(
        cwd.join(MODULE),
        stub.replace(GENERATED_GREET, TUTORIAL_GREET),
    )?;
    python_stub(cwd, "--check");

    // Step 3: the package, packed, then signed and packed again.
    fs::write(cwd.join("my-greeter-py/package.toml"), MANIFEST)?;
    let archive = cwd.join("my-greeter-0.1.0.fid");
    assert!(step(cwd, &["pack", "my-greeter-py"]).contains("unsigned"));
    let unsigned = fs::read(&archive)?;
    let keygen = step(cwd, &["keygen", "--out", "mykey"]);
    let fingerprint = keygen
        .lines()
        .find_map(|line| line.strip_prefix("fingerprint: "))
        .ok_or("keygen printed no fingerprint")?
        .to_owned();
    step(
        cwd,
        &["package", "sign", "--key", "mykey.secret", "my-greeter-py"],
    );
    let packed = step(cwd, &["package", "pack", "my-greeter-py"]);
    assert!(packed.contains("signed"), "{packed}");
    assert_ne!(
        unsigned,
        fs::read(&archive)?,
        "the signed pack is unchanged"
    );
    step(
        cwd,
        &[
            "package",
            "verify",
            "--key",
            "mykey.public",
            "my-greeter-0.1.0.fid",
        ],
    );
    // Deployed: only the archive sits on the host's search path.
    fs::create_dir(cwd.join("plugins"))?;
    fs::rename(&archive, cwd.join("plugins/my-greeter-0.1.0.fid"))?;

    // Step 4: the host.
    let host = PluginHost::builder()
        .search_path(cwd.join("plugins"))
        .require_signature(true)
        .trusted_key(PublicKey::from_file(cwd.join("mykey.public"))?)
        .cache_dir(cwd.join("cache"))
        .build()?;
    let found: Vec<_> = host
        .discover()?
        .into_iter()
        .map(|p| (p.name().to_owned(), p.version().to_string(), p.signed))
        .collect();
    assert_eq!(found, [("my-greeter".into(), "0.1.0".into(), true)]);

    let handle = host.load_python("my-greeter", &Greeter_PYTHON_DESCRIPTOR)?;
    assert_eq!(
        handle.info().signer.as_ref().map(ToString::to_string),
        Some(fingerprint)
    );
    let out = handle.call_typed_json(0, br#"["World"]"#)?;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out)?,
        "Hello, World!"
    );
    expect_empty_input(handle.call_typed_json(0, br#"[""]"#));

    let greeter = GreeterClient(handle.clone());
    assert_eq!(greeter.greet("World".into())?, "Hello, World!");
    expect_empty_input(greeter.greet(String::new()));
    Ok(())
}
