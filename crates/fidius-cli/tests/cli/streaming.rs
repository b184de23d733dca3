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
    fn total(&self, items: Stream<u64>) -> Result<u64, PluginError>;\n}\n";

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
    // A streamed argument cannot be passed yet: said plainly.
    fails_with(&call("total", "[]"), &["streamed argument"]);
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
