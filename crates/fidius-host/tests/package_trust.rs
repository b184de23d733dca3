//! Issue 13 through `PluginHost`: a host requiring signatures loads only the files its trusted keys
//! signed, discovery never blocks on or leaks from a file that is not what it claims to be, and an
//! invalid package never enters the cache.

#[allow(
    dead_code,
    reason = "fidius-core's test support, shared; this suite uses the archive and pyc builders"
)]
#[path = "../../fidius-core/tests/all/support.rs"]
mod package_support;
mod support;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use fidius_core::archive::{pack_dir, SignaturePolicy};
use fidius_core::signing::{generate_signing_key, sign_dir, SigningKey};
use fidius_host::{PluginCall, PluginHost, PublicKey};
use package_support::{inject_into_archive, unchecked_hash_pyc};
use support::{TESTER, TRANSFORM};

/// Long enough for any real run on a loaded machine; a discovery blocked on a FIFO never ends.
const PROMPTLY: Duration = Duration::from_secs(60);

fn tester_package(root: &Path, dir_name: &str, name: &str) -> PathBuf {
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ninterface = \"Tester\"\n\
         interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"tester\"\n"
    );
    support::write_plugin(
        root,
        dir_name,
        &[
            ("package.toml", &manifest),
            ("tester.py", support::TESTER_PLUGIN),
            (
                "vendor/conflictlib/__init__.py",
                &support::conflictlib("1.0", 1),
            ),
        ],
    )
}

fn signature_requiring_host(search: &Path, cache: &Path, key: &SigningKey) -> PluginHost {
    PluginHost::builder()
        .search_path(search)
        .cache_dir(cache)
        .require_signature(true)
        .trusted_key(PublicKey::from(key.verifying_key()))
        .build()
        .unwrap()
}

/// An error with all its causes, as a log line would show it.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Finding 1: bytecode compiled from attacker code, added as `__pycache__/tester.<tag>.pyc` to a
/// genuine signed archive and to a signed directory, is refused by a host requiring signatures,
/// naming the entry; the attacker code never runs.
#[test]
fn injected_bytecode_in_a_signed_package_is_refused_and_never_runs() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("injected-code-ran");
    let (pyc, tag) = unchecked_hash_pyc(&format!(
        "open({:?}, 'w').write('pwned')\n{}",
        marker.display().to_string(),
        support::TESTER_PLUGIN
    ))
    .unwrap();
    let bytecode = format!("__pycache__/tester.{tag}.pyc");
    let key = generate_signing_key();

    let archives = root.path().join("archives");
    let source = tester_package(root.path(), "archived-src", "archived");
    let packed = pack_dir(&source, &archives, SignaturePolicy::SignWith(&key)).unwrap();
    std::fs::remove_dir_all(&source).unwrap();
    let entry = format!("archived-1.0.0/{bytecode}");
    inject_into_archive(&packed.path, &[(&entry, &pyc)]).unwrap();

    let dirs = root.path().join("dirs");
    let signed = tester_package(&dirs, "signed", "signed");
    sign_dir(&signed, &key).unwrap();
    std::fs::create_dir_all(signed.join("__pycache__")).unwrap();
    std::fs::write(signed.join(&bytecode), &pyc).unwrap();

    for (search, name, named) in [
        (&archives, "archived", entry.as_str()),
        (&dirs, "signed", "__pycache__"),
    ] {
        let host = signature_requiring_host(search, &root.path().join("cache"), &key);
        let error = host.load_python(name, &TESTER).err().expect("refused");
        let shown = chain(&error);
        assert!(
            shown.contains(named) && shown.contains("not covered"),
            "{shown}"
        );
        assert!(!marker.exists(), "injected bytecode ran for {name}");
    }
}

/// Finding 5: a FIFO named `x.fid` and a FIFO `package.toml` on a search path are listed as
/// broken at once; discovery and loading the good plugin beside them do not block.
#[cfg(target_os = "linux")]
#[test]
fn fifos_on_a_search_path_are_broken_entries_and_block_nothing() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let key = generate_signing_key();
    let good = tester_package(&plugins, "good", "good");
    sign_dir(&good, &key).unwrap();
    let fifo_manifest = plugins.join("fifo-manifest");
    std::fs::create_dir_all(&fifo_manifest).unwrap();
    for fifo in [plugins.join("x.fid"), fifo_manifest.join("package.toml")] {
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR).unwrap();
    }
    let host = signature_requiring_host(&plugins, &root.path().join("cache"), &key);

    let (sender, receiver) = mpsc::channel();
    let background = host.clone();
    std::thread::spawn(move || {
        let discovery = background.discover().unwrap();
        let broken: Vec<String> = discovery
            .broken
            .iter()
            .map(|broken| format!("{}: {}", broken.path.display(), chain(&broken.error)))
            .collect();
        let plugins: Vec<String> = discovery
            .plugins
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        let answer: Result<Vec<u8>, String> = match background.load_python("good", &TESTER) {
            Ok(handle) => handle
                .call_typed_json(TRANSFORM, b"[2]")
                .map_err(|error| chain(&error)),
            Err(error) => Err(chain(&error)),
        };
        let _ = sender.send((plugins, broken, answer));
    });
    let (plugins, broken, answer) = receiver
        .recv_timeout(PROMPTLY)
        .expect("discovery or loading blocked on a FIFO");
    assert_eq!(plugins, ["good"]);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(
        broken[0].contains("fifo-manifest/package.toml is a FIFO"),
        "{broken:?}"
    );
    assert!(broken[1].contains("x.fid is a FIFO"), "{broken:?}");
    let answer: serde_json::Value = serde_json::from_slice(&answer.unwrap()).unwrap();
    assert_eq!(answer["result"], 2);
}

/// Finding 4: a plugin directory whose package.toml links to a secrets file is broken, and no
/// error shows the secret.
#[cfg(unix)]
#[test]
fn a_symlinked_manifest_is_broken_and_its_target_never_shown() {
    let root = tempfile::tempdir().unwrap();
    let secrets = root.path().join("secrets.env");
    std::fs::write(&secrets, "SECRET_TOKEN=fidius-4b7d-unique-do-not-print\n").unwrap();
    let plugins = root.path().join("plugins");
    let dir = plugins.join("linked");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&secrets, dir.join("package.toml")).unwrap();
    let host = PluginHost::builder()
        .search_path(&plugins)
        .cache_dir(root.path().join("cache"))
        .build()
        .unwrap();
    let discovery = host.discover().unwrap();
    assert_eq!(discovery.broken.len(), 1);
    let shown = chain(&discovery.broken[0].error);
    assert!(shown.contains("symlink"), "{shown}");
    assert!(!shown.contains("fidius-4b7d"), "{shown}");
    let error = host
        .load_python_path(&dir, &TESTER, Default::default())
        .err()
        .expect("refused");
    let shown = chain(&error);
    assert!(!shown.contains("fidius-4b7d"), "{shown}");
}

/// Finding 6: an archive whose manifest reads fine but fails validation against its files (the
/// entry module is missing) is refused, and nothing of it stays in the cache.
#[test]
fn an_invalid_package_never_enters_the_cache() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let manifest = "[package]\nname = \"hollow\"\nversion = \"1.0.0\"\ninterface = \"Tester\"\n\
                    interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"missing\"\n";
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(plugins.join("hollow-1.0.0.fid")).unwrap(),
        flate2::Compression::default(),
    ));
    for (name, content) in [("package.toml", manifest), ("other.py", "x = 1\n")] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(
                &mut header,
                format!("hollow-1.0.0/{name}"),
                content.as_bytes(),
            )
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
    let cache = root.path().join("cache");
    let host = PluginHost::builder()
        .search_path(&plugins)
        .cache_dir(&cache)
        .build()
        .unwrap();
    let error = host.load_python("hollow", &TESTER).err().expect("refused");
    let shown = chain(&error);
    assert!(shown.contains("entry_module"), "{shown}");
    let left: Vec<String> = std::fs::read_dir(&cache)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}
