//! Rust cdylib plugins through the CLI: `init-plugin --runtime rust` scaffolds a crate that
//! `fidius package build` builds into its package; `fidius call` and `fidius test` load it (as a
//! directory, a `.fid` and a bare library); `fidius sign`/`fidius verify` sign a bare library.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::scaffold::{checkout, clear_cargo_env, shared_target};
use crate::support::{fails_with, fidius, succeeds, TestResult};

/// `fidius ARGS` with the outer cargo's variables cleared and the shared target folder, for the
/// commands that run cargo.
fn fidius_building(cwd: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fidius"));
    clear_cargo_env(&mut command);
    command
        .args(args)
        .current_dir(cwd)
        .env("CARGO_TARGET_DIR", shared_target())
        .output()
        .expect("run the fidius binary")
}

#[test]
fn a_scaffolded_rust_plugin_builds_packs_signs_and_answers_calls() -> TestResult {
    let root = tempfile::tempdir()?;
    let dir = root.path();
    let checkout = checkout();
    let checkout = checkout.to_str().expect("a UTF-8 checkout path");
    succeeds(&fidius(
        dir,
        &[
            "init-interface",
            "greeter-api",
            "--trait",
            "Greeter",
            "--fidius-path",
            checkout,
        ],
    ));
    succeeds(&fidius(
        dir,
        &[
            "init-plugin",
            "rs-greeter",
            "--runtime",
            "rust",
            "--interface",
            "greeter-api",
            "--trait",
            "Greeter",
            "--fidius-path",
            checkout,
        ],
    ));
    let lib = dir.join("rs-greeter/src/lib.rs");
    let source = fs::read_to_string(&lib)?;
    assert!(
        source.contains("#[fidius::plugin_impl(greeter_api::Greeter"),
        "{source}"
    );
    fs::write(
        &lib,
        source.replace("todo!(\"greet\")", "format!(\"Hello from Rust, {name}!\")"),
    )?;
    fs::copy(checkout_lock(), dir.join("rs-greeter/Cargo.lock"))?;

    let built = succeeds(&fidius_building(dir, &["package", "build", "rs-greeter"]));
    assert!(built.contains("lib/librs_greeter.so"), "{built}");

    let call = |target: &str, extra: &[&str]| {
        let mut args = vec![
            "call",
            target,
            "greet",
            "[\"World\"]",
            "--interface",
            "greeter-api/src/lib.rs",
            "--trait-name",
            "Greeter",
        ];
        args.extend_from_slice(extra);
        fidius(dir, &args)
    };
    assert_eq!(
        succeeds(&call("rs-greeter", &[])).trim(),
        "\"Hello from Rust, World!\""
    );
    let tested = succeeds(&fidius(
        dir,
        &[
            "test",
            "rs-greeter",
            "--interface",
            "greeter-api/src/lib.rs",
            "--trait-name",
            "Greeter",
        ],
    ));
    assert!(tested.contains("tier:      rust"), "{tested}");

    let cache = dir.join("cache");
    let cache = cache.to_str().expect("UTF-8");
    succeeds(&fidius(dir, &["pack", "rs-greeter", "--out", "out"]));
    assert_eq!(
        succeeds(&call("out/rs-greeter-0.1.0.fid", &["--cache-dir", cache])).trim(),
        "\"Hello from Rust, World!\""
    );

    // A bare library: refused unsigned when signatures are required, loaded once signed,
    // refused again after one byte changed.
    succeeds(&fidius(dir, &["keygen", "--out", "key"]));
    fs::copy(
        dir.join("rs-greeter/lib/librs_greeter.so"),
        dir.join("librs_greeter.so"),
    )?;
    let trusted = ["--require-signature", "--key", "key.public"];
    fails_with(&call("librs_greeter.so", &trusted), &["not signed"]);
    succeeds(&fidius(
        dir,
        &["sign", "--key", "key.secret", "librs_greeter.so"],
    ));
    assert!(succeeds(&fidius(
        dir,
        &["verify", "--key", "key.public", "librs_greeter.so"]
    ))
    .contains("signature ok"));
    assert_eq!(
        succeeds(&call("librs_greeter.so", &trusted)).trim(),
        "\"Hello from Rust, World!\""
    );
    let mut bytes = fs::read(dir.join("librs_greeter.so"))?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(dir.join("librs_greeter.so"), &bytes)?;
    fails_with(
        &fidius(dir, &["verify", "--key", "key.public", "librs_greeter.so"]),
        &["verification"],
    );
    fails_with(&call("librs_greeter.so", &trusted), &["signature rejected"]);
    Ok(())
}

fn checkout_lock() -> std::path::PathBuf {
    checkout().join("Cargo.lock")
}
