//! `--help` works and says something useful on every command.

use crate::support::{fidius, succeeds};

#[test]
fn every_command_has_useful_help() {
    let cases: &[(&[&str], &[&str])] = &[
        (&[], &["pack", "package", "keygen"]),
        (&["pack"], &["deterministic", "--key", "--out", "--python"]),
        (
            &["package"],
            &["unpack", "sign", "verify", "inspect", "validate"],
        ),
        (&["package", "pack"], &["deterministic", "--key"]),
        (
            &["package", "unpack"],
            &["--dest", "Links", "leaves DEST unchanged"],
        ),
        (&["package", "sign"], &["--key", "package.sig"]),
        (&["package", "verify"], &["--key", "signature ok"]),
        (&["package", "inspect"], &["vendored", "--key"]),
        (&["package", "validate"], &["problem"]),
        (&["keygen"], &["--out", "--force", "0600"]),
        (&["test"], &["pytest", "--python", "--key", "Exit status"]),
        (&["cache"], &["list", "prune"]),
        (&["cache", "list"], &["--cache-dir", "loaded"]),
        (
            &["cache", "prune"],
            &["--max-size", "--older-than", "never removed"],
        ),
    ];
    let dir = std::env::temp_dir();
    for (command, fragments) in cases {
        let mut args = command.to_vec();
        args.push("--help");
        let help = succeeds(&fidius(&dir, &args));
        assert!(help.contains("Usage: fidius"), "{args:?}: {help}");
        for fragment in *fragments {
            assert!(
                help.contains(fragment),
                "{args:?} help lacks {fragment:?}:\n{help}"
            );
        }
    }
}
