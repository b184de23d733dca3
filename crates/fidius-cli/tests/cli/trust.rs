//! Issue 13, the trust chain from the command line: a signed package holds exactly the files its
//! signature covers, package files are read only as regular files with size bounds, errors never
//! echo file contents, and keygen never writes through a link.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::call::{greeter_plugin, GREETER};
use crate::package_support::{inject_into_archive, output_within, unchecked_hash_pyc};
use crate::support::{fidius, stderr, stdout, succeeds, write_package, TestResult};

/// Long enough for any real run on a loaded machine; a command that blocks on a FIFO never ends.
const PROMPTLY: Duration = Duration::from_secs(60);

/// A signed greeter: `root/greeter` (now holding package.sig) and its archive, plus the key.
struct SignedGreeter {
    dir: PathBuf,
    archive: PathBuf,
    public_key: PathBuf,
}

fn signed_greeter(root: &Path) -> Result<SignedGreeter, Box<dyn std::error::Error>> {
    let dir = greeter_plugin(root)?;
    succeeds(&fidius(root, &["keygen", "--out", "k"]));
    succeeds(&fidius(
        root,
        &["pack", "greeter", "--key", "k.secret", "--out", "dist"],
    ));
    Ok(SignedGreeter {
        dir,
        archive: root.join("dist/my-greeter-0.1.0.fid"),
        public_key: root.join("k.public"),
    })
}

fn all_output(output: &Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

fn call_signed(root: &Path, package: &Path, key: &Path) -> Output {
    let package = package.to_string_lossy().into_owned();
    let key = key.to_string_lossy().into_owned();
    fidius(
        root,
        &[
            "call",
            "my-greeter",
            &package,
            "greet",
            r#"["World"]"#,
            "--key",
            &key,
            "--require-signature",
            "--cache-dir",
            "cache",
            "--interface",
            GREETER,
            "--trait-name",
            "Greeter",
        ],
    )
}

/// Finding 1: bytecode, build output, version control data and a second signature added to a
/// genuine signed archive or signed directory are refused by `package verify` and by
/// `call --require-signature`, naming the entry, and the injected bytecode never runs.
#[test]
fn files_the_signature_does_not_cover_are_refused_and_never_run() -> TestResult {
    let root = tempfile::tempdir()?;
    let signed = signed_greeter(root.path())?;
    let marker = root.path().join("injected-code-ran");
    let (pyc, cache_tag) = unchecked_hash_pyc(&format!(
        "open({:?}, 'w').write('pwned')\ndef greet(name):\n    return 'pwned'\n",
        marker.display().to_string()
    ))?;
    let bytecode = format!("__pycache__/greeter.{cache_tag}.pyc");
    // (path inside the package, content, what a directory's error names: an excluded directory
    // is refused as a whole, without walking into it)
    let injections: [(&str, &[u8], &str); 4] = [
        (&bytecode, &pyc, "__pycache__"),
        (
            "target/release/build.py",
            b"print('build output')\n",
            "target",
        ),
        (".git/config", b"[core]\n", ".git"),
        ("vendor/extra.sig", &[0u8; 64], "vendor/extra.sig"),
    ];
    // Sanity: the untouched packages verify, and calling the signed archive works.
    succeeds(&verify(root.path(), &signed.public_key, &signed.archive));
    succeeds(&verify(root.path(), &signed.public_key, &signed.dir));
    for (index, (path, content, dir_named)) in injections.iter().enumerate() {
        let archive = root
            .path()
            .join(format!("injected-{index}/my-greeter-0.1.0.fid"));
        fs::create_dir_all(archive.parent().ok_or("no parent")?)?;
        fs::copy(&signed.archive, &archive)?;
        let entry = format!("my-greeter-0.1.0/{path}");
        inject_into_archive(&archive, &[(&entry, content)])?;

        let dir = root.path().join(format!("injected-dir-{index}"));
        crate::package_support::copy_tree(&signed.dir, &dir)?;
        let file = dir.join(path);
        fs::create_dir_all(file.parent().ok_or("no parent")?)?;
        fs::write(&file, content)?;

        for (package, named) in [(&archive, entry.as_str()), (&dir, *dir_named)] {
            let verified = verify(root.path(), &signed.public_key, package);
            assert!(
                !verified.status.success(),
                "{path}: {}",
                all_output(&verified)
            );
            assert!(
                stderr(&verified).contains(named) && stderr(&verified).contains("not covered"),
                "{path}: {}",
                all_output(&verified)
            );
            let called = call_signed(root.path(), package, &signed.public_key);
            assert!(!called.status.success(), "{path}: {}", all_output(&called));
            assert!(
                stderr(&called).contains(named),
                "{path}: {}",
                all_output(&called)
            );
            assert!(
                !stdout(&called).contains("pwned"),
                "{}",
                all_output(&called)
            );
            assert!(!marker.exists(), "injected bytecode ran for {path}");
        }
    }
    Ok(())
}

fn verify(root: &Path, key: &Path, package: &Path) -> Output {
    let key = key.to_string_lossy().into_owned();
    let package = package.to_string_lossy().into_owned();
    fidius(root, &["package", "verify", "--key", &key, &package])
}

/// Finding 4: a package.toml that is a symlink to a secrets file is refused by validate, inspect
/// and pack, and no output of theirs contains the secret.
#[cfg(unix)]
#[test]
fn a_symlinked_manifest_is_refused_without_echoing_its_target() -> TestResult {
    let root = tempfile::tempdir()?;
    let secret = "SECRET_TOKEN=fidius-e2c1-unique-do-not-print";
    let secrets = root.path().join("secrets.env");
    fs::write(&secrets, format!("{secret}\n"))?;
    let package = write_package(root.path(), &[])?;
    fs::remove_file(package.join("package.toml"))?;
    std::os::unix::fs::symlink(&secrets, package.join("package.toml"))?;
    for args in [
        &["package", "validate", "my-greeter-py"][..],
        &["package", "inspect", "my-greeter-py"],
        &["pack", "my-greeter-py", "--out", "dist"],
    ] {
        let output = fidius(root.path(), args);
        let shown = all_output(&output);
        assert!(!output.status.success(), "{args:?}: {shown}");
        assert!(!shown.contains("fidius-e2c1"), "{args:?} leaked: {shown}");
        assert!(shown.contains("symlink"), "{args:?}: {shown}");
    }
    Ok(())
}

/// The TOML error of a regular package.toml shows where, with a short excerpt only.
#[test]
fn a_toml_error_shows_the_position_and_a_short_excerpt() -> TestResult {
    let root = tempfile::tempdir()?;
    let long_value = "v".repeat(500);
    write_package(root.path(), &[])?;
    fs::write(
        root.path().join("my-greeter-py/package.toml"),
        format!("[package]\nTOKEN={long_value}\n"),
    )?;
    let output = fidius(root.path(), &["package", "validate", "my-greeter-py"]);
    let shown = all_output(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(shown.contains("line 2, column"), "{shown}");
    assert!(shown.contains("TOKEN=vvv"), "{shown}");
    assert!(!shown.contains(&"v".repeat(100)), "{shown}");
    Ok(())
}

/// Finding 5: a FIFO as package.toml, package.sig or archive makes validate, verify and inspect
/// fail promptly with a clear error instead of blocking for a writer.
#[cfg(unix)]
#[test]
fn fifos_are_refused_promptly() -> TestResult {
    let root = tempfile::tempdir()?;
    succeeds(&fidius(root.path(), &["keygen", "--out", "k"]));
    let package = write_package(root.path(), &[])?;
    fs::remove_file(package.join("package.toml"))?;
    make_fifo(&package.join("package.toml"))?;
    let signed = write_package(&root.path().join("signed"), &[])?;
    make_fifo(&signed.join("package.sig"))?;
    make_fifo(&root.path().join("x.fid"))?;
    let signed_arg = signed.to_string_lossy().into_owned();
    for (args, expected) in [
        (
            &["package", "validate", "my-greeter-py"][..],
            "package.toml is a FIFO",
        ),
        (
            &["package", "verify", "--key", "k.public", &signed_arg],
            "package.sig is a FIFO",
        ),
        (
            &["package", "verify", "--key", "k.public", "x.fid"],
            "x.fid is a FIFO",
        ),
        (&["package", "inspect", "x.fid"], "x.fid is a FIFO"),
    ] {
        let output = output_within(
            Command::new(env!("CARGO_BIN_EXE_fidius"))
                .args(args)
                .current_dir(root.path()),
            PROMPTLY,
        )?;
        assert!(!output.status.success(), "{args:?}");
        assert!(
            all_output(&output).contains(expected),
            "{args:?}: {}",
            all_output(&output)
        );
    }
    Ok(())
}

#[cfg(unix)]
fn make_fifo(path: &Path) -> std::io::Result<()> {
    let status = Command::new("mkfifo").arg(path).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "mkfifo {} failed",
            path.display()
        )))
    }
}

/// Finding 6: a 1 GiB package.sig is refused from its size alone. The command runs with its
/// address space capped below 1 GiB, so reading the file into memory would fail.
#[cfg(target_os = "linux")]
#[test]
fn a_huge_package_sig_is_refused_without_reading_it() -> TestResult {
    let root = tempfile::tempdir()?;
    succeeds(&fidius(root.path(), &["keygen", "--out", "k"]));
    let package = write_package(root.path(), &[])?;
    // Sparse: takes no disk space, reads as 1 GiB of zeros.
    fs::File::create(package.join("package.sig"))?.set_len(1 << 30)?;
    let output = output_within(
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 900000 && exec \"$0\" package verify --key k.public my-greeter-py")
            .arg(env!("CARGO_BIN_EXE_fidius"))
            .current_dir(root.path()),
        PROMPTLY,
    )?;
    let shown = all_output(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("package.sig is 1073741824 bytes; an Ed25519 signature is 64"),
        "{shown}"
    );
    Ok(())
}

/// Finding 6: keygen never writes through a symlink, with or without --force, and never replaces
/// an existing key without --force.
#[cfg(unix)]
#[test]
fn keygen_refuses_symlinks_and_existing_keys() -> TestResult {
    let root = tempfile::tempdir()?;
    let victim = root.path().join("victim");
    fs::write(&victim, "precious")?;
    std::os::unix::fs::symlink(&victim, root.path().join("k.secret"))?;
    for args in [
        &["keygen", "--out", "k"][..],
        &["keygen", "--out", "k", "--force"],
    ] {
        let output = fidius(root.path(), args);
        assert!(
            !output.status.success(),
            "{args:?}: {}",
            all_output(&output)
        );
        assert!(
            all_output(&output).contains("symlink"),
            "{}",
            all_output(&output)
        );
        assert_eq!(fs::read_to_string(&victim)?, "precious");
        assert!(fs::symlink_metadata(root.path().join("k.secret"))?
            .file_type()
            .is_symlink());
        assert!(!root.path().join("k.public").exists());
    }

    succeeds(&fidius(root.path(), &["keygen", "--out", "real"]));
    let first = fs::read(root.path().join("real.secret"))?;
    let output = fidius(root.path(), &["keygen", "--out", "real"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("already exists"),
        "{}",
        all_output(&output)
    );
    assert_eq!(fs::read(root.path().join("real.secret"))?, first);
    succeeds(&fidius(
        root.path(),
        &["keygen", "--out", "real", "--force"],
    ));
    assert_ne!(fs::read(root.path().join("real.secret"))?, first);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(root.path().join("real.secret"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    Ok(())
}
