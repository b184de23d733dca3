//! The happy path: keygen, validate, sign, verify, pack, inspect, unpack.

use std::fs;

use crate::support::{fidius, listing, succeeds, write_package, TestResult};

#[test]
fn keygen_sign_pack_verify_inspect_unpack() -> TestResult {
    let work = tempfile::tempdir()?;
    let cwd = work.path();
    let package = write_package(cwd, &[("vendor/tiny/__init__.py", "X = 1\n")])?;

    let keygen = succeeds(&fidius(cwd, &["keygen", "--out", "mykey"]));
    assert_eq!(fs::read(cwd.join("mykey.secret"))?.len(), 32);
    assert_eq!(fs::read(cwd.join("mykey.public"))?.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(cwd.join("mykey.secret"))?.permissions().mode() & 0o777,
            0o600
        );
    }
    let fingerprint = keygen
        .lines()
        .find_map(|line| line.strip_prefix("fingerprint: "))
        .ok_or("keygen printed no fingerprint")?
        .to_owned();

    let validate = succeeds(&fidius(cwd, &["package", "validate", "my-greeter-py"]));
    assert!(
        validate.starts_with("ok: my-greeter 0.1.0 implements Greeter v1"),
        "{validate}"
    );

    succeeds(&fidius(
        cwd,
        &["package", "sign", "--key", "mykey.secret", "my-greeter-py"],
    ));
    assert_eq!(fs::read(package.join("package.sig"))?.len(), 64);
    let verify = succeeds(&fidius(
        cwd,
        &[
            "package",
            "verify",
            "--key",
            "mykey.public",
            "my-greeter-py",
        ],
    ));
    assert_eq!(
        verify.trim(),
        format!("my-greeter-py: signature ok (key {fingerprint})")
    );

    let pack = succeeds(&fidius(
        cwd,
        &[
            "pack",
            "my-greeter-py",
            "--key",
            "mykey.secret",
            "--out",
            "dist",
        ],
    ));
    assert!(
        pack.contains(&format!("signed (key {fingerprint})")),
        "{pack}"
    );
    let archive = cwd.join("dist/my-greeter-0.1.0.fid");
    let first_bytes = fs::read(&archive)?;
    succeeds(&fidius(
        cwd,
        &[
            "package",
            "pack",
            "my-greeter-py",
            "--key",
            "mykey.secret",
            "--out",
            "dist",
        ],
    ));
    assert_eq!(
        first_bytes,
        fs::read(&archive)?,
        "packing twice changed the archive"
    );
    // Default output directory: the package's parent.
    succeeds(&fidius(cwd, &["pack", "my-greeter-py/"]));
    assert_eq!(first_bytes, fs::read(cwd.join("my-greeter-0.1.0.fid"))?);

    let verify = succeeds(&fidius(
        cwd,
        &[
            "package",
            "verify",
            "--key",
            "mykey.public",
            "dist/my-greeter-0.1.0.fid",
        ],
    ));
    assert!(
        verify.contains(&format!("signature ok (key {fingerprint})")),
        "{verify}"
    );

    let inspect = succeeds(&fidius(
        cwd,
        &[
            "package",
            "inspect",
            "dist/my-greeter-0.1.0.fid",
            "--key",
            "mykey.public",
        ],
    ));
    for fragment in [
        "package:     my-greeter 0.1.0",
        "interface:   Greeter v1",
        "metadata:    description = A friendly greeting service.",
        &format!("signature:   signature ok (key {fingerprint})"),
        "package.toml",
        "vendor/tiny/ (1 file)",
        "total:",
    ] {
        assert!(
            inspect.contains(fragment),
            "inspect lacks {fragment:?}:\n{inspect}"
        );
    }
    let inspect = succeeds(&fidius(cwd, &["package", "inspect", "my-greeter-py"]));
    assert!(inspect.contains("package.sig present"), "{inspect}");
    assert!(!inspect.contains("vendor/tiny/__init__.py"), "{inspect}");
    let every_file = succeeds(&fidius(
        cwd,
        &["package", "inspect", "--files", "my-greeter-py"],
    ));
    assert!(
        every_file.contains("vendor/tiny/__init__.py"),
        "{every_file}"
    );

    let unpack = succeeds(&fidius(
        cwd,
        &[
            "package",
            "unpack",
            "dist/my-greeter-0.1.0.fid",
            "--dest",
            "out",
        ],
    ));
    assert!(unpack.contains("out/my-greeter-0.1.0"), "{unpack}");
    assert_eq!(listing(&cwd.join("out"))?, ["my-greeter-0.1.0"]);
    assert_eq!(
        fs::read(cwd.join("out/my-greeter-0.1.0/greeter.py"))?,
        fs::read(package.join("greeter.py"))?
    );
    succeeds(&fidius(
        cwd,
        &[
            "package",
            "verify",
            "--key",
            "mykey.public",
            "out/my-greeter-0.1.0",
        ],
    ));
    Ok(())
}
