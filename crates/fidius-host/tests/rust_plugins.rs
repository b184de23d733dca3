//! Rust cdylib plugins (`#[plugin_impl]`) through the same `PluginHost` and handle as Python ones:
//! a real plugin crate is built with cargo (once per run, see `rust_plugin/mod.rs`) and loaded.

mod rust_plugin;
mod support;

use std::path::{Path, PathBuf};

use fidius_core::interface::OwnedInterfaceDescriptor;
use fidius_core::manifest::Runtime;
use fidius_core::signing::{generate_signing_key, sign_dir, sign_file, SigningKey};
use fidius_core::PluginError;
use fidius_host::{
    CallError, LibraryProblem, LoadError, LoadOptions, PluginCall, PluginHandle, PluginHost,
    PluginSource, PublicKey, PythonPluginHandle, Tier,
};
use fidius_macro::plugin_interface;

include!("rust_plugin/greeter.rs");

const DESCRIPTOR: &fidius_core::PythonInterfaceDescriptor =
    &__fidius_Greeter::Greeter_PYTHON_DESCRIPTOR;

fn index(name: &str) -> usize {
    DESCRIPTOR.method_index(name).expect("a Greeter method")
}

/// A search path holding a copy of the built library, as `librust_greeter.so`.
fn plugins_with_library(root: &Path) -> PathBuf {
    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(rust_plugin::library(), plugins.join("librust_greeter.so")).unwrap();
    plugins
}

fn host(search: &Path, cache: &Path, key: Option<&SigningKey>) -> PluginHost {
    let mut builder = PluginHost::builder().search_path(search).cache_dir(cache);
    if let Some(key) = key {
        builder = builder
            .require_signature(true)
            .trusted_key(PublicKey::from(key.verifying_key()));
    }
    builder.build().unwrap()
}

fn library_problem(error: LoadError) -> (PathBuf, LibraryProblem) {
    match error {
        LoadError::RustLibrary {
            library, problem, ..
        } => (library, problem),
        other => panic!("expected a Rust library refusal, got {other:?}"),
    }
}

/// What both kinds of plugin must answer alike: the same client code over either handle.
fn drive<H: PluginCall>(client: &GreeterClient<H>) {
    assert_eq!(client.greet("World").unwrap(), "Hello, World!");
    assert_eq!(
        client.greet("quote \" and \\ and ü").unwrap(),
        "Hello, quote \" and \\ and ü!"
    );
    assert_eq!(client.add(40, 2).unwrap(), 42);
    assert_eq!(client.norm(Point { x: 3, y: -4 }).unwrap(), 7);
    match client.norm(Point { x: -1, y: 0 }) {
        Err(CallError::Plugin(error)) => {
            assert_eq!(error.code, "NEGATIVE");
            assert_eq!(error.message, "x must not be negative");
        }
        other => panic!("expected the plugin's error, got {other:?}"),
    }
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(client.echo(bytes.clone()).unwrap(), bytes);
    assert_eq!(client.farewell("Ann".into()).unwrap(), "Goodbye, Ann.");
    assert!(!client.0.implements(index("shout")));
    assert!(matches!(
        client.shout("Ann".into()),
        Err(CallError::NotImplemented { method }) if method == "shout"
    ));
}

#[test]
fn typed_raw_and_optional_calls_into_a_bare_library_found_on_a_search_path() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugins_with_library(root.path());
    let host = host(&plugins, &root.path().join("cache"), None);

    // One library, two plugins, both listed from the file without mapping it.
    let mut found: Vec<(String, String, String, Runtime)> = host
        .discover()
        .unwrap()
        .plugins
        .iter()
        .map(|plugin| {
            (
                plugin.name().to_owned(),
                plugin.version().to_string(),
                plugin.interface().to_owned(),
                plugin.manifest.package.runtime,
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        found,
        [
            (
                "loud-greeter".into(),
                "0.4.0".into(),
                "Greeter".into(),
                Runtime::Rust
            ),
            (
                "rust-greeter".into(),
                "0.4.0".into(),
                "Greeter".into(),
                Runtime::Rust
            ),
        ]
    );

    let handle: PluginHandle = host.load("rust-greeter", DESCRIPTOR).unwrap();
    assert_eq!(handle.tier().tier, Tier::Rust);
    let client = GreeterClient(handle.clone());
    drive(&client);

    // Raw and typed calls through the handle itself.
    assert_eq!(
        handle.call_raw(index("echo"), b"\x00\xffbytes").unwrap(),
        b"\x00\xffbytes"
    );
    assert_eq!(
        handle.call_typed_json(index("add"), b"[1, 2]").unwrap(),
        b"3"
    );
    assert!(matches!(
        handle.call_typed_json(index("add"), br#"[1, "two"]"#),
        Err(CallError::InvalidArguments { .. })
    ));
    assert!(matches!(
        handle.call_typed_json(index("echo"), b"[]"),
        Err(CallError::WireModeMismatch { .. })
    ));

    // The other plugin of the same library is another plugin.
    let loud = GreeterClient(host.load("loud-greeter", DESCRIPTOR).unwrap());
    assert_eq!(loud.greet("ann").unwrap(), "HELLO, ANN!");
    assert!(!loud.0.implements(index("farewell")));
}

/// Set in the child process that runs the panic scenario.
const PANIC_CHILD: &str = "FIDIUS_RUST_PANIC_CHILD";

#[test]
fn a_panic_is_a_call_error_and_the_next_call_works() {
    if std::env::var_os(PANIC_CHILD).is_some() {
        panic_scenario();
        return;
    }
    // Built in the parent (shared with the other tests); the scenario runs in a child process,
    // because a panic that escaped the boundary would abort whatever process it is in.
    let library = rust_plugin::library();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panic_is_a_call_error_and_the_next_call_works",
            "--nocapture",
        ])
        .env(PANIC_CHILD, library)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "child: {:?}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

fn panic_scenario() {
    let library = std::env::var_os(PANIC_CHILD).expect("set for the child");
    let source = PluginSource::rust(
        "rust-greeter",
        "0.4.0",
        PathBuf::from(library),
        Some("rust-greeter".into()),
    );
    let handle = PythonPluginHandle::start(source, DESCRIPTOR, &LoadOptions::default()).unwrap();
    let client = GreeterClient(handle);
    for round in 0..3 {
        match client.boom(format!("boom {round}")) {
            Err(CallError::Panic { method, message }) => {
                assert_eq!(method, "boom");
                assert_eq!(message, format!("boom {round}"));
            }
            other => panic!("expected a caught panic, got {other:?}"),
        }
        assert_eq!(client.add(round, 1).unwrap(), round + 1);
    }
}

#[test]
fn interface_hash_and_version_mismatches_are_refused_naming_the_library() {
    let library = rust_plugin::library();
    let start = |descriptor: OwnedInterfaceDescriptor| {
        let source = PluginSource::rust(
            "rust-greeter",
            "0.4.0",
            library,
            Some("rust-greeter".into()),
        );
        PythonPluginHandle::start(source, descriptor, &LoadOptions::default())
            .err()
            .expect("refused")
    };
    let mut changed = OwnedInterfaceDescriptor::from(DESCRIPTOR);
    changed.interface_hash ^= 1;
    let (named, problem) = library_problem(start(changed));
    assert_eq!(named, library);
    assert!(
        matches!(problem, LibraryProblem::InterfaceHash { expected, found, .. } if found == DESCRIPTOR.interface_hash && expected == DESCRIPTOR.interface_hash ^ 1),
        "{problem:?}"
    );

    let mut newer = OwnedInterfaceDescriptor::from(DESCRIPTOR);
    newer.version = 2;
    let (_, problem) = library_problem(start(newer));
    assert!(
        matches!(
            problem,
            LibraryProblem::InterfaceVersion {
                found: 1,
                expected: 2,
                ..
            }
        ),
        "{problem:?}"
    );

    let mut other = OwnedInterfaceDescriptor::from(DESCRIPTOR);
    other.trait_name = "Farewell".into();
    let source = PluginSource::rust("rust-greeter", "0.4.0", library, None);
    let error = PythonPluginHandle::start(source, other, &LoadOptions::default())
        .err()
        .expect("refused");
    let (_, problem) = library_problem(error);
    assert!(
        matches!(problem, LibraryProblem::NoSuchPlugin { .. }),
        "{problem:?}"
    );
}

#[test]
fn a_library_for_another_architecture_is_refused_before_it_is_mapped() {
    let root = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(rust_plugin::library()).unwrap();
    // e_machine, at offset 18 of the ELF header: AArch64 (183) on x86-64 hosts, else x86-64 (62).
    let other: u16 = if cfg!(target_arch = "x86_64") {
        183
    } else {
        62
    };
    bytes[18..20].copy_from_slice(&other.to_le_bytes());
    let foreign = root.path().join("libforeign.so");
    std::fs::write(&foreign, &bytes).unwrap();
    let source = PluginSource::rust("foreign", "0.4.0", &foreign, None);
    let error = PythonPluginHandle::start(source, DESCRIPTOR, &LoadOptions::default())
        .err()
        .expect("refused");
    let message = error.to_string();
    let (named, problem) = library_problem(error);
    assert_eq!(named, foreign);
    assert!(
        matches!(problem, LibraryProblem::WrongArchitecture { .. }),
        "{problem:?}"
    );
    assert!(message.contains("libforeign.so"), "{message}");
}

#[test]
fn bare_libraries_need_a_detached_signature_when_signatures_are_required() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugins_with_library(root.path());
    let library = plugins.join("librust_greeter.so");
    let key = generate_signing_key();
    let host = host(&plugins, &root.path().join("cache"), Some(&key));

    assert!(matches!(
        host.load("rust-greeter", DESCRIPTOR).err(),
        Some(LoadError::Unsigned { .. })
    ));

    let bytes = std::fs::read(&library).unwrap();
    let signature = sign_file(&library, &bytes, &key).unwrap();
    assert_eq!(signature, plugins.join("librust_greeter.so.sig"));
    let handle = host.load("rust-greeter", DESCRIPTOR).unwrap();
    assert!(handle.info().signer.is_some());
    assert_eq!(GreeterClient(handle).add(2, 2).unwrap(), 4);

    // One byte changed after signing: refused, never mapped.
    let mut tampered = bytes.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    std::fs::write(&library, &tampered).unwrap();
    assert!(matches!(
        host.load("rust-greeter", DESCRIPTOR).err(),
        Some(LoadError::SignatureRejected { .. })
    ));

    // Signed by a key the host does not trust: refused too.
    std::fs::write(&library, &bytes).unwrap();
    sign_file(&library, &bytes, &generate_signing_key()).unwrap();
    assert!(matches!(
        host.load("rust-greeter", DESCRIPTOR).err(),
        Some(LoadError::SignatureRejected { .. })
    ));
}

/// A `runtime = "rust"` package: package.toml plus the built library under `lib/`.
fn rust_package(root: &Path) -> PathBuf {
    let dir = root.join("greeter-pkg");
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::copy(rust_plugin::library(), dir.join("lib/librust_greeter.so")).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        "[package]\nname = \"greeter-pkg\"\nversion = \"1.2.0\"\ninterface = \"Greeter\"\n\
         interface_version = 1\nruntime = \"rust\"\n\n[rust]\nlibrary = \"lib/librust_greeter.so\"\n\
         plugin = \"rust-greeter\"\n",
    )
    .unwrap();
    dir
}

#[test]
fn a_signed_rust_package_loads_and_a_tampered_one_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let package = rust_package(&plugins);
    let key = generate_signing_key();
    sign_dir(&package, &key).unwrap();
    let host = host(&plugins, &root.path().join("cache"), Some(&key));

    let listed = host.discover().unwrap();
    assert_eq!(listed.plugins.len(), 1, "{listed:?}");
    assert_eq!(listed.plugins[0].manifest.package.runtime, Runtime::Rust);
    let handle = host.load("greeter-pkg", DESCRIPTOR).unwrap();
    assert_eq!(handle.tier().tier, Tier::Rust);
    assert_eq!(GreeterClient(handle).greet("pkg").unwrap(), "Hello, pkg!");

    let library = package.join("lib/librust_greeter.so");
    let mut bytes = std::fs::read(&library).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&library, &bytes).unwrap();
    assert!(matches!(
        host.load("greeter-pkg", DESCRIPTOR).err(),
        Some(LoadError::SignatureRejected { .. })
    ));
}

#[test]
fn one_client_drives_a_rust_and_a_python_implementation_of_one_trait() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugins_with_library(root.path());
    support::write_plugin(
        &plugins,
        "python-greeter",
        &[
            (
                "package.toml",
                "[package]\nname = \"python-greeter\"\nversion = \"1.0.0\"\ninterface = \"Greeter\"\n\
                 interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"greeter\"\n",
            ),
            (
                "greeter.py",
                &rust_plugin::python_greeter(__fidius_Greeter::Greeter_INTERFACE_HASH),
            ),
        ],
    );
    let host = host(&plugins, &root.path().join("cache"), None);
    let clients: Vec<GreeterClient<PluginHandle>> = ["rust-greeter", "python-greeter"]
        .into_iter()
        .map(|name| GreeterClient(host.load(name, DESCRIPTOR).unwrap()))
        .collect();
    assert_eq!(clients[0].0.tier().tier, Tier::Rust);
    assert_eq!(clients[1].0.tier().tier, Tier::Subinterpreter);
    for client in &clients {
        drive(client);
    }
}
