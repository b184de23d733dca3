//! `fidius cache list` / `fidius cache prune`: what `fidius call` unpacked, and removing it.

use crate::call::{call, greeter_plugin};
use crate::support::{fidius, stderr, succeeds, TestResult};

#[test]
fn cache_lists_what_a_call_unpacked_and_prune_removes_it() -> TestResult {
    let root = tempfile::tempdir()?;
    let plugin = greeter_plugin(root.path())?;
    let plugins = root.path().join("plugins");
    let plugins_arg = plugins.to_string_lossy().into_owned();
    let plugin_arg = plugin.to_string_lossy().into_owned();
    succeeds(&fidius(
        root.path(),
        &["pack", &plugin_arg, "--out", &plugins_arg],
    ));
    let archive = plugins.join("my-greeter-0.1.0.fid");
    let cache = root.path().join("cache");
    let cache_arg = cache.to_string_lossy().into_owned();
    let out = succeeds(&call(
        root.path(),
        &archive,
        &["greet", r#"["World"]"#, "--cache-dir", &cache_arg],
    ));
    assert!(out.contains("Hello, World!"), "{out}");

    let cache_command = |args: &[&str]| {
        let mut full = vec!["cache"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--cache-dir", &cache_arg]);
        fidius(root.path(), &full)
    };
    let listed = succeeds(&cache_command(&["list"]));
    assert!(listed.contains("1 package(s)"), "{listed}");
    assert!(listed.contains("my-greeter-0.1.0"), "{listed}");
    for keeps in [["--older-than", "1d"], ["--max-size", "1G"]] {
        let kept = succeeds(&cache_command(&["prune", keeps[0], keeps[1]]));
        assert!(kept.contains("removed 0 package(s)"), "{keeps:?}: {kept}");
    }
    let pruned = succeeds(&cache_command(&["prune", "--max-size", "0"]));
    assert!(pruned.contains("removed 1 package(s)"), "{pruned}");
    assert!(pruned.contains("my-greeter-0.1.0"), "{pruned}");
    let listed = succeeds(&cache_command(&["list"]));
    assert!(listed.contains("0 package(s)"), "{listed}");

    // A bad size is a usage error naming the option (clap's exit status 2).
    let bad = cache_command(&["prune", "--max-size", "2X"]);
    assert_eq!(bad.status.code(), Some(2));
    let message = stderr(&bad);
    assert!(
        message.contains("--max-size") && message.contains("K, M, G or T"),
        "{message}"
    );
    Ok(())
}
