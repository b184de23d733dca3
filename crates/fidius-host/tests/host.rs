//! `PluginHost`: discovery, version choice, archives, and the verification policy, all before any
//! plugin code runs.

mod support;

use std::path::{Path, PathBuf};

use fidius_core::archive::{pack_dir, write_archive, SignaturePolicy};
use fidius_core::signing::{generate_signing_key, sign_dir, SigningKey};
use fidius_core::tree::{PackageTree, Selection};
use fidius_host::{LoadError, LoadOptions, PluginCall, PluginHost, PublicKey};
use support::{TESTER, TRANSFORM};

/// A packaged `Tester` plugin (package.toml + code + vendored conflictlib) in `root/dir_name`.
/// Its module writes `marker` when imported, so tests can tell whether any plugin code ran.
fn package(root: &Path, dir_name: &str, name: &str, version: &str, marker: &Path) -> PathBuf {
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\ninterface = \"Tester\"\n\
         interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"tester\"\n"
    );
    let module = format!(
        "open({:?}, 'a').write('imported {version}\\n')\n{}",
        marker.display().to_string(),
        support::TESTER_PLUGIN
    );
    support::write_plugin(
        root,
        dir_name,
        &[
            ("package.toml", &manifest),
            ("tester.py", &module),
            (
                "vendor/conflictlib/__init__.py",
                &support::conflictlib(version, 1),
            ),
        ],
    )
}

fn public(key: &SigningKey) -> PublicKey {
    PublicKey::from(key.verifying_key())
}

fn host_for(search: &Path, cache: &Path, key: Option<&SigningKey>) -> PluginHost {
    let mut builder = PluginHost::builder().search_path(search).cache_dir(cache);
    if let Some(key) = key {
        builder = builder.require_signature(true).trusted_key(public(key));
    }
    builder.build().unwrap()
}

fn version_of(handle: &impl PluginCall) -> String {
    let out = handle.call_typed_json(TRANSFORM, b"[1]").unwrap();
    let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
    out["version"].as_str().unwrap().to_owned()
}

#[test]
fn discovery_reads_manifests_and_reports_broken_packages_without_hiding_others() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    package(&plugins, "a", "alpha", "1.0.0", &marker);
    let packed = package(root.path(), "b-src", "beta", "2.0.0", &marker);
    pack_dir(&packed, &plugins, SignaturePolicy::RefuseNewerFiles).unwrap();
    support::write_plugin(
        &plugins,
        "broken",
        &[("package.toml", "[package]\nname = 1\n")],
    );
    std::fs::write(plugins.join("junk.fid"), b"not an archive").unwrap();

    let host = host_for(&plugins, &root.path().join("cache"), None);
    let discovery = host.discover().unwrap();
    let found: Vec<(String, String, bool)> = discovery
        .plugins
        .iter()
        .map(|p| (p.name().to_owned(), p.version().to_string(), p.archive))
        .collect();
    assert_eq!(
        found,
        [
            ("alpha".into(), "1.0.0".into(), false),
            ("beta".into(), "2.0.0".into(), true)
        ]
    );
    assert_eq!(discovery.plugins[0].interface(), "Tester");
    assert_eq!(discovery.broken.len(), 2, "{:?}", discovery.broken);
    assert!(!marker.exists(), "discovery ran plugin code");
    assert!(
        !root.path().join("cache").exists(),
        "discovery unpacked an archive"
    );
}

#[test]
fn highest_version_wins_unless_one_is_named() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    for version in ["1.2.0", "1.10.0", "1.9.9"] {
        package(
            &plugins,
            &format!("multi-{version}"),
            "multi",
            version,
            &marker,
        );
    }
    let host = host_for(&plugins, &root.path().join("cache"), None);
    assert_eq!(
        version_of(&host.load_python("multi", &TESTER).unwrap()),
        "1.10.0"
    );
    assert_eq!(
        version_of(&host.load_python("multi@1.2.0", &TESTER).unwrap()),
        "1.2.0"
    );
    match host.load_python("multi@3.0.0", &TESTER) {
        Err(LoadError::NotFound { available, .. }) => {
            assert!(
                available.contains(&"multi@1.9.9".to_owned()),
                "{available:?}"
            );
        }
        other => panic!("expected NotFound, got {:?}", other.err()),
    }
}

#[test]
fn signed_archives_load_through_the_cache_and_a_second_load_reuses_it() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    let key = generate_signing_key();
    let source = package(root.path(), "src", "archived", "1.0.0", &marker);
    pack_dir(&source, &plugins, SignaturePolicy::SignWith(&key)).unwrap();
    std::fs::remove_dir_all(&source).unwrap();

    let cache = root.path().join("cache");
    let host = host_for(&plugins, &cache, Some(&key));
    let handle = host.load_python("archived", &TESTER).unwrap();
    assert_eq!(version_of(&handle), "1.0.0");
    assert_eq!(handle.info().signer, Some(public(&key).fingerprint()));
    // One folder per archive hash, beside the host's bytecode cache folder.
    let slots = || {
        std::fs::read_dir(&cache)
            .unwrap()
            .filter(|entry| entry.as_ref().unwrap().file_name() != "bytecode")
            .count()
    };
    assert_eq!(slots(), 1, "one folder per archive hash");
    let again = host.load_python("archived", &TESTER).unwrap();
    assert_eq!(version_of(&again), "1.0.0");
    assert_eq!(slots(), 1);
}

#[test]
fn unsigned_plugin_is_refused_before_any_code_runs() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    package(&plugins, "unsigned", "unsigned", "1.0.0", &marker);
    let key = generate_signing_key();
    let host = host_for(&plugins, &root.path().join("cache"), Some(&key));
    let error = host
        .load_python("unsigned", &TESTER)
        .err()
        .expect("refused");
    assert!(matches!(error, LoadError::Unsigned { .. }), "{error}");
    assert!(
        !marker.exists(),
        "plugin code ran before the signature check"
    );
}

#[test]
fn tampered_archive_and_untrusted_key_are_refused_before_any_code_runs() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let key = generate_signing_key();

    // Signed, then changed after signing, then packed with its now-stale signature.
    let tampered_src = package(root.path(), "tampered-src", "tampered", "1.0.0", &marker);
    sign_dir(&tampered_src, &key).unwrap();
    std::fs::write(tampered_src.join("extra.py"), "x = 1\n").unwrap();
    let tampered_dir = root.path().join("tampered");
    std::fs::create_dir_all(&tampered_dir).unwrap();
    let tree = PackageTree::scan(&tampered_src, Selection::Archive).unwrap();
    let archive = std::fs::File::create(tampered_dir.join("tampered-1.0.0.fid")).unwrap();
    write_archive(&tree, "tampered-1.0.0", archive).unwrap();
    let host = host_for(&tampered_dir, &root.path().join("cache"), Some(&key));
    let error = host
        .load_python("tampered", &TESTER)
        .err()
        .expect("refused");
    assert!(
        matches!(error, LoadError::SignatureRejected { .. }),
        "{error}"
    );

    // Properly signed, but by a key the host does not trust.
    let stranger = generate_signing_key();
    let foreign_src = package(root.path(), "foreign-src", "foreign", "1.0.0", &marker);
    let foreign_dir = root.path().join("foreign");
    pack_dir(
        &foreign_src,
        &foreign_dir,
        SignaturePolicy::SignWith(&stranger),
    )
    .unwrap();
    let host = host_for(&foreign_dir, &root.path().join("cache"), Some(&key));
    let error = host.load_python("foreign", &TESTER).err().expect("refused");
    assert!(
        matches!(error, LoadError::SignatureRejected { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("foreign"), "{error}");

    assert!(
        !marker.exists(),
        "plugin code ran before the signature check"
    );
    let cache_entries = std::fs::read_dir(root.path().join("cache"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(cache_entries, 0, "a rejected archive entered the cache");
}

#[test]
fn manifest_interface_mismatches_are_refused_precisely() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    let dir = package(&plugins, "other", "other", "1.0.0", &marker);
    let manifest = std::fs::read_to_string(dir.join("package.toml")).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        manifest.replace("interface = \"Tester\"", "interface = \"Greeter\""),
    )
    .unwrap();
    let dir = package(&plugins, "old", "old", "1.0.0", &marker);
    let manifest = std::fs::read_to_string(dir.join("package.toml")).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        manifest.replace("interface_version = 1", "interface_version = 7"),
    )
    .unwrap();

    let host = host_for(&plugins, &root.path().join("cache"), None);
    let error = host.load_python("other", &TESTER).err().expect("refused");
    assert_eq!(
        error.to_string(),
        "plugin `other`: implements interface `Greeter`, the host expects `Tester`"
    );
    let error = host.load_python("old", &TESTER).err().expect("refused");
    assert_eq!(
        error.to_string(),
        "plugin `old`: implements version 7 of `Tester`, the host expects version 1"
    );
    assert!(!marker.exists());
}

/// The original fidius never compared the manifest's interface name with the trait: one spelled
/// `tester` for `Tester` loads, with a warning, unless the load is strict.
#[test]
fn a_manifest_interface_spelled_differently_loads_with_a_warning_unless_strict() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    let dir = package(&plugins, "spelled", "spelled", "1.0.0", &marker);
    let manifest = std::fs::read_to_string(dir.join("package.toml")).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        manifest.replace("interface = \"Tester\"", "interface = \"tester\""),
    )
    .unwrap();
    let host = host_for(&plugins, &root.path().join("cache"), None);
    let strict = host
        .load_python_with("spelled", &TESTER, LoadOptions::default().strict(true))
        .err()
        .expect("strict refuses");
    assert!(
        matches!(strict, LoadError::InterfaceNameMismatch { ref found, .. } if found == "tester"),
        "{strict}"
    );
    assert!(!marker.exists(), "a refused plugin ran");
    let handle = host.load_python("spelled", &TESTER).expect("lenient load");
    assert_eq!(
        handle.info().warnings,
        [fidius_host::LoadWarning::InterfaceName {
            found: "tester".to_owned(),
            expected: "Tester".to_owned()
        }]
    );
    assert_eq!(version_of(&handle), "1.0.0");
    assert!(marker.exists());
}

#[test]
fn require_signature_without_keys_is_a_build_error() {
    let error = PluginHost::builder()
        .require_signature(true)
        .build()
        .err()
        .expect("refused");
    assert!(matches!(error, fidius_host::HostError::NoTrustedKeys));
}

/// A package exactly as the original fidius tool ships it: tar + bzip2 with one `NAME-VERSION/`
/// top folder, `package.sig` over the same digest, and a module that imports the SDK without
/// vendoring it and carries no `__interface__` / `__interface_version__`.
#[test]
fn packages_made_by_the_original_tool_verify_load_and_answer() {
    let root = tempfile::tempdir().unwrap();
    let key = generate_signing_key();
    let module = support::TESTER_PLUGIN
        .replace("__interface__ = \"Tester\"\n", "")
        .replace("__interface_version__ = 1\n", "");
    let manifest = "[package]\nname = \"legacy\"\nversion = \"0.3.1\"\ninterface = \"Tester\"\n\
                    interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"tester\"\n";
    let source = support::write_plugin(
        root.path(),
        "legacy-0.3.1",
        &[
            ("package.toml", manifest),
            ("tester.py", &module),
            (
                "vendor/conflictlib/__init__.py",
                &support::conflictlib("0.9", 4),
            ),
        ],
    );
    sign_dir(&source, &key).unwrap();

    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let file = std::fs::File::create(plugins.join("legacy-0.3.1.fid")).unwrap();
    let mut tar = tar::Builder::new(bzip2::write::BzEncoder::new(
        file,
        bzip2::Compression::best(),
    ));
    tar.append_dir_all("legacy-0.3.1", &source).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    std::fs::remove_dir_all(&source).unwrap();

    let host = host_for(&plugins, &root.path().join("cache"), Some(&key));
    let handle = host.load_python("legacy", &TESTER).unwrap();
    let out = handle.call_typed_json(TRANSFORM, b"[5]").unwrap();
    let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["version"], "0.9");
    assert_eq!(out["result"], 20);
    assert_eq!(handle.info().signer, Some(public(&key).fingerprint()));
}

fn manifest_version(handle: &fidius_host::PythonPluginHandle) -> String {
    let info = handle.info();
    let manifest = info.manifest.as_ref().unwrap();
    manifest.package.version.to_string()
}

/// Issue 8: eight threads call without pause while the plugin is replaced 20 times by a newer
/// version; no call fails, each answers from a version that was loaded, and once the last reload
/// returned only the newest version answers.
#[test]
fn reloading_under_load_drops_no_call_and_ends_on_the_new_version() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    package(&plugins, "v0", "hot", "1.0.0", &marker);
    let host = host_for(&plugins, &root.path().join("cache"), None);
    let handle = host
        .load_python_with(
            "hot",
            &TESTER,
            fidius_host::LoadOptions::default().instances(2),
        )
        .unwrap();
    const RELOADS: u64 = 20;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen: Vec<std::collections::BTreeSet<u64>> = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (handle, stop) = (&handle, &stop);
                scope.spawn(move || {
                    let mut seen = std::collections::BTreeSet::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let version = version_of(handle);
                        let minor: u64 = version.split('.').nth(1).unwrap().parse().unwrap();
                        assert!(minor <= RELOADS, "{version}");
                        seen.insert(minor);
                    }
                    seen
                })
            })
            .collect();
        for reload in 1..=RELOADS {
            package(
                &plugins,
                &format!("v{reload}"),
                "hot",
                &format!("1.{reload}.0"),
                &marker,
            );
            handle.reload().unwrap();
            assert_eq!(manifest_version(&handle), format!("1.{reload}.0"));
        }
        // Only the newest version answers now, whichever instance takes the call.
        for _ in 0..50 {
            assert_eq!(version_of(&handle), format!("1.{RELOADS}.0"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        callers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let all: std::collections::BTreeSet<u64> = seen.into_iter().flatten().collect();
    assert!(
        all.len() > 2,
        "calls kept going during the reloads: {all:?}"
    );
    // Old instances end on their own threads as soon as they are idle: wait for that, boundedly.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while handle.stats().instances != 2 && std::time::Instant::now() < give_up {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(handle.stats().instances, 2, "old instances have ended");
}

#[test]
fn a_reload_is_verified_like_a_load_and_a_rejected_one_leaves_the_old_version_serving() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    let key = generate_signing_key();
    let signed = package(&plugins, "v1", "guarded", "1.0.0", &marker);
    sign_dir(&signed, &key).unwrap();
    let host = host_for(&plugins, &root.path().join("cache"), Some(&key));
    let handle = host.load_python("guarded", &TESTER).unwrap();
    std::fs::remove_file(&marker).unwrap();

    // A newer version that nobody signed: refused before any of its code runs.
    package(&plugins, "v2", "guarded", "2.0.0", &marker);
    assert!(matches!(
        handle.reload(),
        Err(LoadError::Unsigned { ref plugin, .. }) if plugin == "guarded"
    ));
    assert!(!marker.exists(), "plugin code ran before verification");
    assert_eq!(version_of(&handle), "1.0.0");

    // Signed, but broken: the import fails and the old version keeps serving.
    let broken = package(&plugins, "v3", "guarded", "3.0.0", &marker);
    std::fs::write(broken.join("tester.py"), "def broken(:\n").unwrap();
    sign_dir(&broken, &key).unwrap();
    assert!(matches!(handle.reload(), Err(LoadError::Syntax { .. })));
    assert_eq!(version_of(&handle), "1.0.0");
    assert_eq!(manifest_version(&handle), "1.0.0");

    // A good, signed version goes in.
    let good = package(&plugins, "v4", "guarded", "4.0.0", &marker);
    sign_dir(&good, &key).unwrap();
    handle.reload().unwrap();
    assert_eq!(version_of(&handle), "4.0.0");
    assert_eq!(handle.info().signer, Some(public(&key).fingerprint()));
}

#[test]
fn host_reload_by_name_reaches_every_live_handle_of_that_plugin() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    package(&plugins, "a1", "alpha", "1.0.0", &marker);
    package(&plugins, "b1", "beta", "1.0.0", &marker);
    let host = host_for(&plugins, &root.path().join("cache"), None);
    let first = host.load_python("alpha", &TESTER).unwrap();
    let second = host.load_python("alpha", &TESTER).unwrap();
    let other = host.load_python("beta", &TESTER).unwrap();
    let dropped = host.load_python("alpha", &TESTER).unwrap();
    drop(dropped);

    package(&plugins, "a2", "alpha", "2.0.0", &marker);
    package(&plugins, "b2", "beta", "2.0.0", &marker);
    assert_eq!(
        host.reload("alpha").unwrap(),
        2,
        "the dropped handle is not reloaded"
    );
    assert_eq!(version_of(&first), "2.0.0");
    assert_eq!(version_of(&second), "2.0.0");
    assert_eq!(version_of(&other), "1.0.0", "another plugin was reloaded");

    assert!(matches!(
        host.reload("gamma"),
        Err(LoadError::NotLoaded { ref name }) if name == "gamma"
    ));
}
