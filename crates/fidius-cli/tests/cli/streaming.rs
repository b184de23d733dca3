//! Streamed results from the command line: `python-stub` writes `Iterator[T]` for a `Stream<T>`,
//! `fidius call` prints one JSON value per line, and `python-stub` refuses exactly what the macro
//! refuses.

use std::fs;
use std::path::Path;

use crate::support::{fails_with, fidius, stdout, succeeds};

const TICKER: &str = "use fidius::{PluginError, Stream};\n\n\
#[fidius::plugin_interface(version = 1)]\n\
pub trait Ticker {\n    \
    /// Counts up to `count`.\n    \
    fn tick(&self, count: u32) -> Stream<u64>;\n    \
    fn words(&self, text: String) -> Stream<String>;\n    \
    fn total(&self, items: Stream<u64>) -> Result<u64, PluginError>;\n    \
    fn doubled(&self, factor: u64, items: Stream<u64>) -> Stream<u64>;\n    \
    fn first_two(&self, items: Stream<u64>) -> u64;\n}\n";

fn ticker_plugin(root: &Path) -> std::path::PathBuf {
    fs::write(root.join("ticker.rs"), TICKER).unwrap();
    let dir = root.join("ticker");
    fs::create_dir_all(&dir).unwrap();
    let module = dir.join("ticker.py");
    succeeds(&fidius(
        root,
        &[
            "python-stub",
            "--interface",
            "ticker.rs",
            "--trait-name",
            "Ticker",
            "--out",
            &module.to_string_lossy(),
        ],
    ));
    let stub = fs::read_to_string(&module).unwrap();
    assert!(
        stub.contains("def tick(count: int) -> Iterator[int]:"),
        "{stub}"
    );
    assert!(
        stub.contains("def total(items: Iterator[int]) -> int:"),
        "{stub}"
    );
    assert!(stub.contains("from typing import Iterator"), "{stub}");
    let filled = stub
        .replacen(
            "    \"\"\"Counts up to `count`.\"\"\"\n    raise NotImplementedError",
            "    \"\"\"Counts up to `count`.\"\"\"\n    for i in range(count):\n        yield i\n    if count > 100:\n        raise PluginError(\"TOO_MANY\", \"at most 100\")",
            1,
        )
        .replacen(
            "raise NotImplementedError",
            "return iter(text.split())",
            1,
        )
        .replacen("raise NotImplementedError", "return sum(items)", 1)
        .replacen(
            "raise NotImplementedError",
            "for item in items:\n        yield item * factor",
            1,
        )
        .replacen(
            "raise NotImplementedError",
            "items = iter(items)\n    return next(items) + next(items)",
            1,
        );
    fs::write(&module, filled).unwrap();
    fs::write(
        dir.join("package.toml"),
        "[package]\nname = \"ticker\"\nversion = \"0.1.0\"\ninterface = \"Ticker\"\n\
         interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"ticker\"\n",
    )
    .unwrap();
    dir
}

#[test]
fn fidius_call_prints_a_streamed_result_one_json_value_per_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = ticker_plugin(root.path());
    let dir = dir.to_string_lossy().into_owned();
    let call = |method: &str, args: &str| {
        fidius(
            root.path(),
            &[
                "call",
                &dir,
                method,
                args,
                "--interface",
                "ticker.rs",
                "--trait-name",
                "Ticker",
            ],
        )
    };
    for isolation in ["subinterpreter", "process"] {
        let output = fidius(
            root.path(),
            &[
                "call",
                &dir,
                "tick",
                "[3]",
                "--interface",
                "ticker.rs",
                "--trait-name",
                "Ticker",
                "--isolation",
                isolation,
            ],
        );
        assert_eq!(succeeds(&output), "0\n1\n2\n", "{isolation}");
    }
    assert_eq!(
        succeeds(&call("words", r#"["a b  c"]"#)),
        "\"a\"\n\"b\"\n\"c\"\n"
    );
    // The items before an error are printed, then the error fails the command.
    let failed = call("tick", "[101]");
    let printed = stdout(&failed);
    assert_eq!(printed.lines().count(), 101, "{printed}");
    fails_with(&failed, &["TOO_MANY", "at most 100"]);
    // A streamed argument needs its items: said plainly.
    fails_with(&call("total", "[]"), &["streamed argument", "--stream-in"]);
}

#[test]
fn fidius_call_reads_a_streamed_argument_from_json_lines_as_the_plugin_asks() {
    let root = tempfile::tempdir().unwrap();
    let dir = ticker_plugin(root.path());
    let dir = dir.to_string_lossy().into_owned();
    fs::write(root.path().join("items.jsonl"), "1\n2\n3\n").unwrap();
    fs::write(root.path().join("bad.jsonl"), "1\n\"two\"\n3\n").unwrap();
    let call = |method: &str, args: &str, items: &str, isolation: &str| {
        fidius(
            root.path(),
            &[
                "call",
                &dir,
                method,
                args,
                "--stream-in",
                items,
                "--interface",
                "ticker.rs",
                "--trait-name",
                "Ticker",
                "--isolation",
                isolation,
            ],
        )
    };
    for isolation in ["subinterpreter", "process"] {
        assert_eq!(
            succeeds(&call("total", "[]", "items.jsonl", isolation)),
            "6\n",
            "{isolation}"
        );
        // Bidirectional: one JSON value per line.
        assert_eq!(
            succeeds(&call("doubled", "[10]", "items.jsonl", isolation)),
            "10\n20\n30\n",
            "{isolation}"
        );
        // Each line is checked against the item type, named by its number.
        fails_with(
            &call("total", "[]", "bad.jsonl", isolation),
            &["`items`, item 2", "expected"],
        );
    }
    fails_with(
        &call("tick", "[3]", "items.jsonl", "subinterpreter"),
        &["takes no streamed argument"],
    );
    fails_with(
        &call("total", "[]", "missing.jsonl", "subinterpreter"),
        &["cannot read --stream-in", "missing.jsonl"],
    );

    // Read lazily from stdin: the plugin takes two items and returns while stdin stays open (a
    // command that read all of stdin first would wait for its end).
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fidius"))
        .args([
            "call",
            &dir,
            "first_two",
            "[]",
            "--stream-in",
            "-",
            "--interface",
            "ticker.rs",
            "--trait-name",
            "Ticker",
        ])
        .current_dir(root.path())
        .env_remove("FIDIUS_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"40\n2\n").unwrap();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > give_up {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if status.is_none() {
        child.kill().unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(status.is_some(), "fidius call waited for the end of stdin");
    assert_eq!(succeeds(&output), "42\n");
}

#[test]
fn python_stub_and_check_refuse_what_the_macro_refuses() {
    let root = tempfile::tempdir().unwrap();
    fs::write(
        root.path().join("bad.rs"),
        "#[fidius::plugin_interface(version = 1)]\npub trait Bad {\n    \
         fn label(&self) -> &'static str;\n    \
         fn nested(&self) -> Option<fidius::Stream<u64>>;\n}\n",
    )
    .unwrap();
    fs::write(root.path().join("bad.py"), "").unwrap();
    let stub = fidius(
        root.path(),
        &[
            "python-stub",
            "--interface",
            "bad.rs",
            "--trait-name",
            "Bad",
            "--out",
            "out.py",
        ],
    );
    fails_with(
        &stub,
        &[
            "cannot return a reference",
            "`Stream<T>` must be the whole return type",
        ],
    );
    assert!(!root.path().join("out.py").exists());
    let check = fidius(
        root.path(),
        &[
            "python-stub",
            "--interface",
            "bad.rs",
            "--trait-name",
            "Bad",
            "--check",
            "bad.py",
        ],
    );
    fails_with(&check, &["bad.py does not match interface Bad"]);
    let listing = crate::support::stderr(&check);
    assert!(
        listing.contains("cannot be served by a Python plugin")
            && listing.contains("cannot return a reference"),
        "{listing}"
    );
}
