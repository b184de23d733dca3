//! Builders for package trees and for comparing directories. fidius-cli's tests include this
//! file too (`#[path]`), so both suites build packages the same way.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The example manifest from the packaging docs, without requirements.
pub const MANIFEST: &str = include_str!("../fixtures/package.toml");

/// A minimal valid package in `DIR/my-greeter-py`, plus the extra files given.
pub fn write_package(dir: &Path, extra: &[(&str, &[u8])]) -> std::io::Result<PathBuf> {
    let root = dir.join("my-greeter-py");
    fs::create_dir_all(&root)?;
    fs::write(root.join("package.toml"), MANIFEST)?;
    fs::write(
        root.join("greeter.py"),
        "def greet(name):\n    return f'hi {name}'\n",
    )?;
    for (path, content) in extra {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, content)?;
    }
    Ok(root)
}

/// What a directory holds: file contents and exec bits, and directories (as `None`).
pub fn snapshot(root: &Path) -> BTreeMap<String, Option<(Vec<u8>, bool)>> {
    let mut entries = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.expect("walk test directory");
        let relative = entry
            .path()
            .strip_prefix(root)
            .expect("inside root")
            .to_string_lossy()
            .into_owned();
        let value = if entry.file_type().is_dir() {
            None
        } else {
            Some((
                fs::read(entry.path()).expect("read test file"),
                is_executable(entry.path()),
            ))
        };
        entries.insert(relative, value);
    }
    entries
}

#[cfg(unix)]
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
pub fn is_executable(_path: &Path) -> bool {
    false
}

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(std::io::Error::other)?;
        let target = to.join(
            entry
                .path()
                .strip_prefix(from)
                .map_err(std::io::Error::other)?,
        );
        if entry.file_type().is_dir() {
            fs::create_dir_all(&target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The Python fidius embeds (`FIDIUS_PYTHON`, else `PYO3_PYTHON`), as the build and CI set it.
#[allow(
    dead_code,
    reason = "used by fidius-cli's tests, which include this file"
)]
pub fn embedded_python() -> std::path::PathBuf {
    // An empty variable counts as unset, as it does for the CLI.
    let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    set("FIDIUS_PYTHON")
        .or_else(|| set("PYO3_PYTHON"))
        .map(std::path::PathBuf::from)
        .expect(
            "set FIDIUS_PYTHON or PYO3_PYTHON to the Python fidius embeds (ci/python-bootstrap)",
        )
}

/// Compiles `source` with the embedded Python into an *unchecked-hash* pyc, the kind CPython
/// imports from `__pycache__` without comparing it to the `.py` beside it. Returns the pyc bytes
/// and the interpreter's cache tag (`cpython-313`), which names the file CPython looks for.
#[allow(
    dead_code,
    reason = "used by fidius-cli's tests, which include this file"
)]
pub fn unchecked_hash_pyc(source: &str) -> std::io::Result<(Vec<u8>, String)> {
    let work = tempfile::tempdir()?;
    let source_path = work.path().join("attack.py");
    let pyc_path = work.path().join("attack.pyc");
    fs::write(&source_path, source)?;
    let output = std::process::Command::new(embedded_python())
        .arg("-c")
        .arg(
            "import py_compile, sys\n\
             py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True,\n\
                 invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)\n\
             print(sys.implementation.cache_tag)",
        )
        .arg(&source_path)
        .arg(&pyc_path)
        .output()?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "py_compile failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let tag = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok((fs::read(pyc_path)?, tag))
}

/// Rewrites the gzip `.fid` at `archive` with `extra` regular-file entries (full archive paths)
/// appended after every original entry, the way an attacker edits a genuine signed archive.
pub fn inject_into_archive(archive: &Path, extra: &[(&str, &[u8])]) -> std::io::Result<()> {
    let bytes = fs::read(archive)?;
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let mut output = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for entry in input.entries()? {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        let path = entry.path()?.into_owned();
        output.append_data(&mut header, path, &mut entry)?;
    }
    for (path, content) in extra {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        output.append_data(&mut header, path, *content)?;
    }
    fs::write(archive, output.into_inner()?.finish()?)
}

/// Runs `command` and waits at most `limit` for it; a command still running then is killed and
/// reported as an error, so a regression that blocks fails the test instead of hanging it.
#[allow(
    dead_code,
    reason = "used by fidius-cli's tests, which include this file"
)]
pub fn output_within(
    command: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = std::time::Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > limit {
            child.kill()?;
            child.wait()?;
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{command:?} still running after {limit:?}"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output()
}
