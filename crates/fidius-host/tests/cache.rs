//! The package cache is private to its user and re-proven before a slot is served: slots planted by
//! another user, made writable by others, or edited after admission are replaced from the archive,
//! never served; interrupted unpacks are cleaned up; pruning goes least recently used first and
//! never removes a slot in use.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use fidius_core::archive::{pack_dir, SignaturePolicy};
use fidius_core::signing::{generate_signing_key, SigningKey};
use fidius_host::{LoadError, PackageCache, PluginCall, PluginHost, PruneRule, PublicKey};
use sha2::{Digest, Sha256};
use support::{TESTER, TRANSFORM};

const RECORD: &str = ".fidius-slot.json";
const SCENARIO_ENV: &str = "FIDIUS_CACHE_TEST_SCENARIO";

/// A `Tester` plugin source folder `root/src-NAME` (vendored `conflictlib` at `version`).
fn plugin_source(root: &Path, name: &str, version: &str) -> PathBuf {
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ninterface = \"Tester\"\n\
         interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"tester\"\n"
    );
    support::write_plugin(
        root,
        &format!("src-{name}"),
        &[
            ("package.toml", &manifest),
            ("tester.py", support::TESTER_PLUGIN),
            (
                "vendor/conflictlib/__init__.py",
                &support::conflictlib(version, 1),
            ),
        ],
    )
}

/// Packs `source` into `plugins/` (signed with `key`, if given); returns the archive.
fn archive(source: &Path, plugins: &Path, key: Option<&SigningKey>) -> PathBuf {
    let policy = match key {
        Some(key) => SignaturePolicy::SignWith(key),
        None => SignaturePolicy::CheckExisting(&[]),
    };
    pack_dir(source, plugins, policy).unwrap().path
}

/// The slot an archive is unpacked into: `cache/<sha256 of the archive>`.
fn slot_of(cache: &Path, archive: &Path) -> PathBuf {
    cache.join(hex::encode(Sha256::digest(std::fs::read(archive).unwrap())))
}

fn host(plugins: &Path, cache: &Path) -> PluginHost {
    PluginHost::builder()
        .search_path(plugins)
        .cache_dir(cache)
        .build()
        .unwrap()
}

fn version_of(handle: &impl PluginCall) -> String {
    let out = handle.call_typed_json(TRANSFORM, b"[1]").unwrap();
    let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
    out["version"].as_str().unwrap().to_owned()
}

/// The poisoner's module: writes `marker` when imported, otherwise a working plugin.
fn poisoned_module(marker: &Path) -> String {
    format!(
        "open({:?}, 'a').write('poisoned code ran\\n')\n{}",
        marker.display().to_string(),
        support::TESTER_PLUGIN
    )
}

/// Replaces the slot's `tester.py` with the poisoner's and, like a careful poisoner, updates the
/// slot's record to match, so that only the owner and mode checks stand in the way.
fn forge_slot(slot: &Path, marker: &Path) {
    let module = poisoned_module(marker);
    let top = package_dir(slot);
    let relative = format!("{}/tester.py", top.file_name().unwrap().to_str().unwrap());
    std::fs::write(top.join("tester.py"), &module).unwrap();
    let Ok(record) = std::fs::read(slot.join(RECORD)) else {
        return; // a cache without records (fidius before records existed)
    };
    let mut record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    for file in record["files"].as_array_mut().unwrap() {
        if file["path"] == relative.as_str() {
            file["size"] = module.len().into();
            file["sha256"] = hex::encode(Sha256::digest(module.as_bytes())).into();
        }
    }
    std::fs::write(slot.join(RECORD), serde_json::to_vec(&record).unwrap()).unwrap();
}

/// The `NAME-VERSION` folder inside a slot.
fn package_dir(slot: &Path) -> PathBuf {
    std::fs::read_dir(slot)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.is_dir())
        .expect("a package folder in the slot")
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn nobody_uid() -> u32 {
    let out = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn chown_tree(path: &Path, uid: u32) {
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.unwrap();
        std::os::unix::fs::lchown(entry.path(), Some(uid), None).unwrap();
    }
}

/// Loads `name` with a fresh host (so nothing is remembered from an earlier load in this process).
fn load_fresh(plugins: &Path, cache: &Path, name: &str) -> fidius_host::PythonPluginHandle {
    host(plugins, cache)
        .load_python(name, &TESTER)
        .unwrap_or_else(|error| panic!("loading {name}: {error}"))
}

#[test]
fn a_slot_owned_by_another_user_is_replaced_never_served() {
    if !is_root() {
        eprintln!("skipped: planting a slot owned by another user (nobody) needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    let cache = root.path().join("cache");
    let archive = archive(
        &plugin_source(root.path(), "planted", "genuine"),
        &plugins,
        None,
    );
    drop(load_fresh(&plugins, &cache, "planted"));
    let slot = slot_of(&cache, &archive);
    forge_slot(&slot, &marker);
    chown_tree(&slot, nobody_uid());

    let handle = load_fresh(&plugins, &cache, "planted");
    assert_eq!(version_of(&handle), "genuine");
    assert!(!marker.exists(), "the poisoner's code ran");
    let owner = std::fs::metadata(package_dir(&slot).join("tester.py"))
        .unwrap()
        .uid();
    assert_eq!(owner, 0, "the slot was not replaced");
}

#[test]
fn a_group_writable_slot_is_replaced_never_served() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    let cache = root.path().join("cache");
    let archive = archive(
        &plugin_source(root.path(), "shared", "genuine"),
        &plugins,
        None,
    );
    drop(load_fresh(&plugins, &cache, "shared"));
    let slot = slot_of(&cache, &archive);
    forge_slot(&slot, &marker);
    let tester = package_dir(&slot).join("tester.py");
    std::fs::set_permissions(&tester, std::fs::Permissions::from_mode(0o664)).unwrap();

    let handle = load_fresh(&plugins, &cache, "shared");
    assert_eq!(version_of(&handle), "genuine");
    assert!(!marker.exists(), "code from a group-writable slot ran");
    let mode = std::fs::metadata(&tester).unwrap().mode();
    assert_eq!(mode & 0o022, 0, "the slot was not replaced");
}

#[test]
fn a_cache_folder_writable_by_others_or_owned_by_another_user_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let cache = root.path().join("cache");
    archive(
        &plugin_source(root.path(), "open", "genuine"),
        &plugins,
        None,
    );
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let error = host(&plugins, &cache)
        .load_python("open", &TESTER)
        .err()
        .expect("a world-writable cache was used");
    assert!(matches!(error, LoadError::Cache { .. }), "{error}");
    let chain = format!("{error}: {}", std::error::Error::source(&error).unwrap());
    assert!(chain.contains("writable by group or others"), "{chain}");

    if is_root() {
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        chown_tree(&cache, nobody_uid());
        let error = host(&plugins, &cache)
            .load_python("open", &TESTER)
            .err()
            .expect("another user's cache was used");
        let chain = format!("{error}: {}", std::error::Error::source(&error).unwrap());
        assert!(chain.contains("belongs to uid"), "{chain}");
    } else {
        eprintln!("skipped the other-owner half: needs root");
    }
}

#[test]
fn an_edited_cached_copy_without_its_signature_is_replaced_under_either_policy() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    let cache = root.path().join("cache");
    let key = generate_signing_key();
    let public = PublicKey::from(key.verifying_key());
    let archive = archive(
        &plugin_source(root.path(), "signed", "genuine"),
        &plugins,
        Some(&key),
    );
    let slot = slot_of(&cache, &archive);
    let edit = || {
        let top = package_dir(&slot);
        std::fs::write(top.join("tester.py"), poisoned_module(&marker)).unwrap();
        std::fs::remove_file(top.join("package.sig")).unwrap();
    };
    let host_with = |required: bool| {
        PluginHost::builder()
            .search_path(&plugins)
            .cache_dir(&cache)
            .trusted_key(public)
            .require_signature(required)
            .build()
            .unwrap()
    };
    drop(host_with(false).load_python("signed", &TESTER).unwrap());

    for required in [false, true] {
        edit();
        let handle = host_with(required)
            .load_python("signed", &TESTER)
            .unwrap_or_else(|error| panic!("required={required}: {error}"));
        assert_eq!(version_of(&handle), "genuine");
        assert_eq!(
            handle.info().signer,
            Some(public.fingerprint()),
            "required={required}"
        );
        assert!(!marker.exists(), "required={required}: the edited copy ran");
    }
}

/// Re-executes this test binary in one of the scenarios of [`child_scenario`].
fn child(scenario: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_scenario",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO_ENV, scenario);
    command
}

/// Not a test on its own: the child side of the tests that need a separate process (a clean
/// environment, or a process to kill). Does nothing unless `FIDIUS_CACHE_TEST_SCENARIO` is set.
#[test]
fn child_scenario() {
    let Ok(scenario) = std::env::var(SCENARIO_ENV) else {
        return;
    };
    let plugins = std::env::var_os("FIDIUS_TEST_PLUGINS").expect("FIDIUS_TEST_PLUGINS");
    let name = std::env::var("FIDIUS_TEST_PLUGIN").expect("FIDIUS_TEST_PLUGIN");
    let mut builder = PluginHost::builder().search_path(plugins);
    if let Some(cache) = std::env::var_os("FIDIUS_TEST_CACHE") {
        builder = builder.cache_dir(cache);
    }
    match scenario.as_str() {
        "load" => match builder.build().unwrap().load_python(&name, &TESTER) {
            Ok(handle) => println!("LOADED {}", handle.source().dir.display()),
            Err(error) => {
                let mut message = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                println!("REFUSED {message}");
                std::process::exit(3);
            }
        },
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn without_home_the_default_cache_is_a_private_per_user_folder() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let temp = root.path().join("tmp");
    std::fs::create_dir(&temp).unwrap();
    let archive = archive(
        &plugin_source(root.path(), "homeless", "genuine"),
        &plugins,
        None,
    );
    let run = || {
        child("load")
            .env_remove("HOME")
            .env_remove("XDG_CACHE_HOME")
            .env("TMPDIR", &temp)
            .env("FIDIUS_TEST_PLUGINS", &plugins)
            .env("FIDIUS_TEST_PLUGIN", "homeless")
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !temp.join("fidius-packages").exists(),
        "the shared temp path was used"
    );
    let uid = rustix::process::geteuid().as_raw();
    let private = temp.join(format!("fidius-{uid}"));
    let metadata = std::fs::symlink_metadata(&private).unwrap();
    assert!(metadata.is_dir());
    assert_eq!(metadata.uid(), uid);
    assert_eq!(metadata.mode() & 0o777, 0o700);
    let slot = slot_of(&private.join("packages"), &archive);
    assert!(
        stdout.contains(&format!("LOADED {}", slot.display())),
        "{stdout}"
    );

    // A per-user folder someone else could write to is refused, not used.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("writable by group or others"), "{stdout}");
}

/// Deterministic bytes that do not compress (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

#[test]
fn a_kill_during_unpack_leaves_nothing_behind_and_the_next_load_succeeds() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let cache = root.path().join("cache");
    let source = plugin_source(root.path(), "big", "genuine");
    // 32 MiB that do not compress: unpacking takes long enough to be killed in the middle. Packed
    // uncompressed (gzip "stored" blocks) so that making the archive is quick.
    std::fs::write(source.join("blob.bin"), noise(32 << 20)).unwrap();
    std::fs::create_dir_all(&plugins).unwrap();
    let archive = plugins.join("big-1.0.0.fid");
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(&archive).unwrap(),
        flate2::Compression::none(),
    ));
    tar.append_dir_all("big-1.0.0", &source).unwrap();
    tar.into_inner().unwrap().finish().unwrap();

    let mut unpacking = child("load")
        .env("FIDIUS_TEST_PLUGINS", &plugins)
        .env("FIDIUS_TEST_PLUGIN", "big")
        .env("FIDIUS_TEST_CACHE", &cache)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let staging = |cache: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(cache)
            .map(|entries| {
                entries
                    .map(|entry| entry.unwrap().path())
                    .filter(|path| {
                        path.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with(".staging-")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // Wait (bounded) until the blob is being written into a staging folder, then SIGKILL.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let writing = staging(&cache).iter().any(|dir| {
            walkdir::WalkDir::new(dir)
                .into_iter()
                .filter_map(Result::ok)
                .any(|entry| entry.file_name() == "blob.bin")
        });
        if writing {
            break;
        }
        assert!(
            unpacking.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the child never started unpacking"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    unpacking.kill().unwrap();
    let status = unpacking.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(
        !slot_of(&cache, &archive).exists(),
        "killed before the unpack finished"
    );
    assert_eq!(
        staging(&cache).len(),
        1,
        "the interrupted unpack left its staging folder"
    );

    let handle = load_fresh(&plugins, &cache, "big");
    assert_eq!(version_of(&handle), "genuine");
    assert_eq!(
        staging(&cache),
        Vec::<PathBuf>::new(),
        "a staging folder remains"
    );
}

/// Sets a slot's "last used" time.
fn set_last_used(slot: &Path, when: SystemTime) {
    std::fs::File::open(slot.join(RECORD))
        .unwrap()
        .set_modified(when)
        .unwrap();
}

#[test]
fn pruning_removes_least_recently_used_slots_and_never_one_in_use() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let cache = root.path().join("cache");
    let slots: Vec<PathBuf> = ["held", "old", "recent", "spare"]
        .iter()
        .map(|name| {
            slot_of(
                &cache,
                &archive(&plugin_source(root.path(), name, name), &plugins, None),
            )
        })
        .collect();
    let [held, old, recent, spare] = &slots[..] else {
        unreachable!()
    };
    let host = host(&plugins, &cache);
    let in_use = host.load_python("held", &TESTER).unwrap();
    for name in ["old", "recent", "spare"] {
        drop(host.load_python(name, &TESTER).unwrap());
    }
    let now = SystemTime::now();
    let days = |n: u64| now - Duration::from_secs(n * 86_400);
    set_last_used(held, days(30));
    set_last_used(old, days(10));
    set_last_used(spare, days(5));
    set_last_used(recent, days(0));

    let cache_view = PackageCache::at(&cache);
    let listed = cache_view.list().unwrap();
    assert_eq!(listed.len(), 4);
    assert!(
        listed
            .iter()
            .find(|slot| &slot.path == held)
            .unwrap()
            .in_use
    );
    assert_eq!(listed.iter().filter(|slot| slot.in_use).count(), 1);

    // By age: the held slot is the oldest but in use.
    let removed = cache_view
        .prune(&PruneRule {
            older_than: Some(Duration::from_secs(7 * 86_400)),
            ..PruneRule::default()
        })
        .unwrap();
    assert_eq!(
        removed.iter().map(|slot| &slot.path).collect::<Vec<_>>(),
        [old]
    );
    assert!(held.exists() && !old.exists() && spare.exists() && recent.exists());

    // By size: room for the held slot and one more; the less recently used one goes.
    let size = |slot: &Path| -> u64 {
        cache_view
            .list()
            .unwrap()
            .iter()
            .find(|listed| listed.path == slot)
            .unwrap()
            .bytes
    };
    let max_bytes = size(held) + size(recent);
    let removed = cache_view
        .prune(&PruneRule {
            max_bytes: Some(max_bytes),
            ..PruneRule::default()
        })
        .unwrap();
    assert_eq!(
        removed.iter().map(|slot| &slot.path).collect::<Vec<_>>(),
        [spare]
    );
    assert!(held.exists() && recent.exists());

    // Nothing may go while in use, even with no room at all; once dropped, it may.
    let everything = PruneRule {
        max_bytes: Some(0),
        ..PruneRule::default()
    };
    cache_view.prune(&everything).unwrap();
    assert!(held.exists() && !recent.exists());
    assert_eq!(version_of(&in_use), "held", "the slot in use still serves");
    drop(in_use);
    cache_view.prune(&everything).unwrap();
    assert!(!held.exists());

    // The host's own cap: after an unpack, unused slots beyond the cap go, the new one stays.
    let capped = PluginHost::builder()
        .search_path(&plugins)
        .cache_dir(&cache)
        .cache_max_size(1)
        .build()
        .unwrap();
    drop(capped.load_python("old", &TESTER).unwrap());
    let kept = capped.load_python("spare", &TESTER).unwrap();
    assert!(!old.exists() && spare.exists());
    assert_eq!(version_of(&kept), "spare");
}

#[test]
fn a_proven_slot_is_still_checked_against_each_hosts_own_keys() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let cache = root.path().join("cache");
    let signer = generate_signing_key();
    let stranger = PublicKey::from(generate_signing_key().verifying_key());
    let trusted = PublicKey::from(signer.verifying_key());
    archive(
        &plugin_source(root.path(), "keyed", "genuine"),
        &plugins,
        Some(&signer),
    );
    let host_trusting = |key: &PublicKey| {
        PluginHost::builder()
            .search_path(&plugins)
            .cache_dir(&cache)
            .trusted_key(*key)
            .require_signature(true)
            .build()
            .unwrap()
    };
    drop(
        host_trusting(&trusted)
            .load_python("keyed", &TESTER)
            .unwrap(),
    );
    let error = host_trusting(&stranger)
        .load_python("keyed", &TESTER)
        .err()
        .expect("a slot admitted under another key was served");
    assert!(
        matches!(error, LoadError::SignatureRejected { .. }),
        "{error}"
    );
    let handle = host_trusting(&trusted)
        .load_python("keyed", &TESTER)
        .unwrap();
    assert_eq!(handle.info().signer, Some(trusted.fingerprint()));
}

#[test]
fn an_edit_that_keeps_size_and_modification_time_is_still_caught() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let cache = root.path().join("cache");
    let archive = archive(
        &plugin_source(root.path(), "sneaky", "genuine"),
        &plugins,
        None,
    );
    drop(load_fresh(&plugins, &cache, "sneaky"));
    let library = package_dir(&slot_of(&cache, &archive)).join("vendor/conflictlib/__init__.py");
    let modified = std::fs::metadata(&library).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(&library).unwrap();
    let edited = text.replace("\"genuine\"", "\"edited!\"");
    assert_eq!(edited.len(), text.len());
    std::fs::write(&library, edited).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&library)
        .unwrap()
        .set_modified(modified)
        .unwrap();

    let handle = load_fresh(&plugins, &cache, "sneaky");
    assert_eq!(version_of(&handle), "genuine", "the edited copy was served");
}

#[test]
fn a_symbolic_link_in_place_of_a_slot_is_removed_not_followed() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("marker");
    let plugins = root.path().join("plugins");
    let cache = root.path().join("cache");
    let archive = archive(
        &plugin_source(root.path(), "linked", "genuine"),
        &plugins,
        None,
    );
    drop(load_fresh(&plugins, &cache, "linked"));
    // Someone's copy of the slot elsewhere, poisoned, and the slot replaced by a link to it.
    let slot = slot_of(&cache, &archive);
    let elsewhere = root.path().join("elsewhere");
    std::fs::rename(&slot, &elsewhere).unwrap();
    forge_slot(&elsewhere, &marker);
    std::os::unix::fs::symlink(&elsewhere, &slot).unwrap();

    let handle = load_fresh(&plugins, &cache, "linked");
    assert_eq!(version_of(&handle), "genuine");
    assert!(!marker.exists(), "code behind the link ran");
    assert!(std::fs::symlink_metadata(&slot).unwrap().is_dir());
    assert!(
        elsewhere.join(RECORD).exists(),
        "the link's target was removed"
    );
}
