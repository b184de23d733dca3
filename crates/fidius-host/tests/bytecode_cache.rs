//! The host's private bytecode cache: a second load of a verified plugin takes its modules' code from
//! the cache (both tiers share it), a changed source or a cache file made from other source is never
//! used, nothing is written into the plugin tree, the folder is private, and pruning bounds it.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use fidius_core::manifest::Isolation;
use fidius_host::{LoadOptions, PackageCache, PluginCall, PluginHost, PruneRule, WorkerCommand};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{RETURN, TESTER, TRANSFORM};

const MANIFEST: &str = "[package]\nname = \"warm\"\nversion = \"1.0.0\"\ninterface = \"Tester\"\n\
                        interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"tester\"\n";

const STATS: &str = "__import__('__main__')._fidius_bytecode_cache.stats";

fn options(isolation: Isolation) -> LoadOptions {
    let options = LoadOptions::default().isolation(isolation);
    match isolation {
        Isolation::Subinterpreter => options,
        // The process tier's workers, and the probe `auto` runs.
        _ => options.worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker"))),
    }
}

fn give_back(handle: &impl PluginCall, expression: &str) -> Value {
    let out = handle
        .call_typed_json(RETURN, json!([expression]).to_string().as_bytes())
        .unwrap_or_else(|error| panic!("{expression}: {error}"));
    serde_json::from_slice(&out).unwrap()
}

fn stats(handle: &impl PluginCall) -> (u64, u64, u64) {
    let stats = give_back(handle, STATS);
    let count = |name: &str| stats[name].as_u64().unwrap_or_else(|| panic!("{stats}"));
    (count("hits"), count("compiled"), count("rejected"))
}

struct Fixture {
    root: tempfile::TempDir,
    plugin: PathBuf,
    host: PluginHost,
}

impl Fixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let plugin = support::write_plugin(
            &root.path().join("plugins"),
            "warm",
            &[
                ("package.toml", MANIFEST),
                ("tester.py", support::TESTER_PLUGIN),
                (
                    "vendor/conflictlib/__init__.py",
                    &support::conflictlib("one", 2),
                ),
            ],
        );
        let host = PluginHost::builder()
            .search_path(root.path().join("plugins"))
            .cache_dir(root.path().join("cache"))
            .build()
            .unwrap();
        Self { root, plugin, host }
    }

    fn cache(&self) -> PackageCache {
        PackageCache::at(self.root.path().join("cache"))
    }

    /// The one interpreter folder inside the bytecode cache.
    fn interpreter_dir(&self) -> PathBuf {
        let dirs: Vec<PathBuf> = std::fs::read_dir(self.cache().bytecode_dir())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs.into_iter().next().unwrap()
    }

    /// Where the cache keeps the code of `source`.
    fn cached_file(&self, source: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(source.as_bytes()));
        self.interpreter_dir().join(format!("{name}.pyc"))
    }

    fn load(&self, isolation: Isolation) -> fidius_host::PythonPluginHandle {
        self.host
            .load_python_with("warm", &TESTER, options(isolation))
            .unwrap_or_else(|error| panic!("{isolation:?}: {error}"))
    }
}

/// Every `.pyc` or `__pycache__` under `dir`.
fn bytecode_in(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|entry| entry.unwrap().into_path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "pyc")
                || path.file_name().is_some_and(|name| name == "__pycache__")
        })
        .collect()
}

fn transform(handle: &impl PluginCall) -> Value {
    serde_json::from_slice(&handle.call_typed_json(TRANSFORM, b"[3]").unwrap()).unwrap()
}

#[test]
fn a_second_load_in_either_tier_uses_the_cache_and_a_changed_source_compiles_again() {
    let fixture = Fixture::new();
    let first = fixture.load(Isolation::Subinterpreter);
    assert_eq!(
        stats(&first),
        (0, 2, 0),
        "first load compiles tester and conflictlib"
    );
    drop(first);
    assert!(fixture.cached_file(support::TESTER_PLUGIN).is_file());
    let library = support::conflictlib("one", 2);
    assert!(fixture.cached_file(&library).is_file());

    for isolation in [Isolation::Subinterpreter, Isolation::Process] {
        let again = fixture.load(isolation);
        assert_eq!(
            stats(&again),
            (2, 0, 0),
            "{isolation:?}: both from the cache"
        );
        assert_eq!(transform(&again)["result"], 6);
    }

    // A changed source has another SHA-256: compiled again, the new code runs.
    let changed = support::conflictlib("two", 5);
    std::fs::write(
        fixture.plugin.join("vendor/conflictlib/__init__.py"),
        &changed,
    )
    .unwrap();
    let reloaded = fixture.load(Isolation::Subinterpreter);
    assert_eq!(stats(&reloaded), (1, 1, 0));
    assert_eq!(transform(&reloaded)["result"], 15);
    assert!(fixture.cached_file(&changed).is_file());

    assert_eq!(bytecode_in(&fixture.plugin), Vec::<PathBuf>::new());
}

/// Compiles `code` with the bootstrapped CPython into a pyc at `target` (`mode`: a
/// `py_compile.PycInvalidationMode` name).
fn compile_pyc(code: &str, target: &Path, mode: &str, scratch: &Path) {
    let source = scratch.join("attacker.py");
    std::fs::write(&source, code).unwrap();
    let status = Command::new(env!("FIDIUS_BUILD_PYTHON"))
        .arg("-I")
        .arg("-c")
        .arg(
            "import py_compile, sys\n\
             py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True,\n\
                 invalidation_mode=py_compile.PycInvalidationMode[sys.argv[3]])\n",
        )
        .arg(&source)
        .arg(target)
        .arg(mode)
        .status()
        .unwrap();
    assert!(status.success(), "py_compile failed");
}

#[test]
fn a_cache_file_that_was_not_compiled_from_this_source_is_never_used() {
    let fixture = Fixture::new();
    drop(fixture.load(Isolation::Subinterpreter));
    let marker = fixture.root.path().join("marker");
    let attacker = format!(
        "open({:?}, 'a').write('cached bytecode of other source ran\\n')\n{}",
        marker.display().to_string(),
        support::TESTER_PLUGIN
    );
    let cached = fixture.cached_file(support::TESTER_PLUGIN);
    for mode in ["CHECKED_HASH", "UNCHECKED_HASH", "TIMESTAMP"] {
        compile_pyc(&attacker, &cached, mode, fixture.root.path());
        std::fs::set_permissions(&cached, std::fs::Permissions::from_mode(0o600)).unwrap();
        for isolation in [Isolation::Subinterpreter, Isolation::Process] {
            let handle = fixture.load(isolation);
            let (hits, compiled, rejected) = stats(&handle);
            assert_eq!(
                (hits, compiled, rejected),
                (1, 1, 1),
                "{mode} {isolation:?}"
            );
            assert!(
                !marker.exists(),
                "{mode} {isolation:?}: {}",
                std::fs::read_to_string(&marker).unwrap_or_default()
            );
            // The rejected file was replaced by the real code: put the forgery back for the next.
            compile_pyc(&attacker, &cached, mode, fixture.root.path());
            std::fs::set_permissions(&cached, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    // The real code, but writable by others: not used either.
    drop(fixture.load(Isolation::Subinterpreter)); // rewrites the real file
    std::fs::set_permissions(&cached, std::fs::Permissions::from_mode(0o666)).unwrap();
    let handle = fixture.load(Isolation::Subinterpreter);
    assert_eq!(stats(&handle), (1, 1, 1));
}

#[test]
fn the_cache_folder_is_private_and_a_shared_one_is_not_used() {
    let fixture = Fixture::new();
    drop(fixture.load(Isolation::Subinterpreter));
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let bytecode = fixture.cache().bytecode_dir();
    assert_eq!(mode(&bytecode), 0o700);
    assert_eq!(mode(&fixture.interpreter_dir()), 0o700);
    assert_eq!(mode(&fixture.cached_file(support::TESTER_PLUGIN)), 0o600);

    std::fs::set_permissions(&bytecode, std::fs::Permissions::from_mode(0o777)).unwrap();
    let handle = fixture.load(Isolation::Subinterpreter);
    assert_eq!(
        give_back(&handle, "__import__('__main__')._fidius_bytecode_cache"),
        Value::Null,
        "a folder others can write is not used"
    );
    assert_eq!(transform(&handle)["result"], 6);
}

#[test]
fn a_bare_plugin_source_never_uses_the_cache() {
    let root = tempfile::tempdir().unwrap();
    let handle = support::start_tester(root.path(), "bare", "one", 2, 1);
    assert_eq!(
        give_back(&handle, "__import__('__main__')._fidius_bytecode_cache"),
        Value::Null
    );
    assert_eq!(bytecode_in(root.path()), Vec::<PathBuf>::new());
}

#[test]
fn pruning_the_package_cache_bounds_the_bytecode_too() {
    let fixture = Fixture::new();
    drop(fixture.load(Isolation::Subinterpreter));
    let cache = fixture.cache();
    assert!(cache.bytecode_bytes() > 0);
    let rule = PruneRule {
        max_bytes: Some(0),
        older_than: None,
    };
    cache.prune(&rule).unwrap();
    assert_eq!(cache.bytecode_bytes(), 0);
    let handle = fixture.load(Isolation::Subinterpreter);
    assert_eq!(stats(&handle), (0, 2, 0), "pruned files are compiled again");
}

#[test]
fn a_host_keeps_the_bytecode_under_its_cache_size() {
    let fixture = Fixture::new();
    drop(fixture.load(Isolation::Subinterpreter));
    let small = PluginHost::builder()
        .search_path(fixture.root.path().join("plugins"))
        .cache_dir(fixture.root.path().join("cache"))
        .cache_max_size(1)
        .build()
        .unwrap();
    let handle = small
        .load_python_with("warm", &TESTER, options(Isolation::Subinterpreter))
        .unwrap();
    assert_eq!(
        stats(&handle),
        (0, 2, 0),
        "the bound removed the cached files before the load"
    );
    // Without a bound of its own, a host keeps what fits the default.
    let handle = fixture.load(Isolation::Subinterpreter);
    assert_eq!(stats(&handle), (2, 0, 0));
}

/// CPython's own `xxlimited` extension module file (multi-phase: imports in a sub-interpreter).
fn xxlimited() -> PathBuf {
    let output = Command::new(env!("FIDIUS_BUILD_PYTHON"))
        .args(["-I", "-c", "import xxlimited; print(xxlimited.__file__)"])
        .output()
        .unwrap();
    assert!(output.status.success(), "no xxlimited in the build Python");
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

#[test]
fn the_extension_probe_of_a_load_uses_the_cache_too() {
    let fixture = Fixture::new();
    // A vendored package with a compiled extension: `auto` probes it (importing the package) at
    // load; the plugin itself never imports it, so only the probe can have compiled its source.
    let package = "VALUE = 'probed'\n";
    let dir = fixture.plugin.join("vendor/fastpkg");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("__init__.py"), package).unwrap();
    let extension = xxlimited();
    std::fs::copy(&extension, dir.join(extension.file_name().unwrap())).unwrap();
    let handle = fixture.load(Isolation::Auto);
    assert_eq!(handle.tier().tier.to_string(), "subinterpreter");
    assert_eq!(
        give_back(&handle, "'fastpkg' in __import__('sys').modules"),
        false
    );
    assert!(
        fixture.cached_file(package).is_file(),
        "the probe wrote the package's bytecode"
    );
    assert_eq!(bytecode_in(&fixture.plugin), Vec::<PathBuf>::new());
}
