//! `fidius call`: one method of a real plugin through the host code, from the command line.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{fails_with, fidius, stderr, succeeds, TestResult};

pub(crate) const GREETER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fidius-macro/tests/fixtures/greeter.rs"
);

/// A Greeter plugin generated with `python-stub` and filled in: greet, and a raw echo that
/// reverses its input; the optional `farewell` is left out, as a version-1 plugin would.
pub(crate) fn greeter_plugin(root: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let dir = root.join("greeter");
    fs::create_dir_all(&dir)?;
    let module = dir.join("greeter.py");
    let module_arg = module.to_string_lossy().into_owned();
    succeeds(&fidius(
        root,
        &[
            "python-stub",
            "--interface",
            GREETER,
            "--trait-name",
            "Greeter",
            "--out",
            &module_arg,
        ],
    ));
    let stub = fs::read_to_string(&module)?
        .replace(
            "    \"\"\"Greets someone by name.\"\"\"\n    raise NotImplementedError",
            "    \"\"\"Greets someone by name.\"\"\"\n    if not name:\n        raise PluginError(\"EMPTY_INPUT\", \"name must not be empty\")\n    return f\"Hello, {name}!\"",
        )
        .replace(
            "    \"\"\"Returns its input unchanged, as raw bytes.\"\"\"\n    raise NotImplementedError",
            "    \"\"\"Returns its input unchanged, as raw bytes.\"\"\"\n    return data[::-1]",
        );
    let stub = match stub.find("# Optional since") {
        Some(optional) => stub[..optional].to_owned(),
        None => stub,
    };
    fs::write(&module, stub)?;
    fs::write(
        dir.join("package.toml"),
        "[package]\nname = \"my-greeter\"\nversion = \"0.1.0\"\ninterface = \"Greeter\"\n\
         interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"greeter\"\n",
    )?;
    Ok(dir)
}

pub(crate) fn call(root: &Path, plugin: &Path, extra: &[&str]) -> std::process::Output {
    let plugin = plugin.to_string_lossy().into_owned();
    let mut args = vec!["call", "my-greeter", &plugin];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--interface", GREETER, "--trait-name", "Greeter"]);
    fidius(root, &args)
}

#[test]
fn typed_call_prints_the_json_result() -> TestResult {
    let root = tempfile::tempdir()?;
    let plugin = greeter_plugin(root.path())?;
    let out = succeeds(&call(root.path(), &plugin, &["greet", r#"["World"]"#]));
    assert_eq!(out.trim(), r#""Hello, World!""#);
    Ok(())
}

#[test]
fn plugin_errors_and_bad_input_exit_non_zero_with_one_line() -> TestResult {
    let root = tempfile::tempdir()?;
    let plugin = greeter_plugin(root.path())?;
    fails_with(
        &call(root.path(), &plugin, &["greet", r#"[""]"#]),
        &["EMPTY_INPUT", "name must not be empty"],
    );
    fails_with(
        &call(root.path(), &plugin, &["greet", r#"{"name": "x"}"#]),
        &["JSON array"],
    );
    fails_with(
        &call(root.path(), &plugin, &["shout", "[]"]),
        &["no method `shout`", "greet, stats, echo, farewell"],
    );
    fails_with(
        &call(root.path(), &plugin, &["farewell", r#"["x"]"#]),
        &["does not implement optional method `farewell`"],
    );
    let wrong_name = fidius(
        root.path(),
        &[
            "call",
            "someone-else",
            &plugin.to_string_lossy(),
            "greet",
            "[]",
            "--interface",
            GREETER,
            "--trait-name",
            "Greeter",
        ],
    );
    fails_with(
        &wrong_name,
        &["holds plugin `my-greeter`, not `someone-else`"],
    );
    Ok(())
}

#[test]
fn raw_calls_read_and_write_files() -> TestResult {
    let root = tempfile::tempdir()?;
    let plugin = greeter_plugin(root.path())?;
    let input = root.path().join("in.bin");
    let output = root.path().join("out.bin");
    fs::write(&input, [0u8, 1, 2, 255])?;
    succeeds(&call(
        root.path(),
        &plugin,
        &[
            "echo",
            "--raw-in",
            &input.to_string_lossy(),
            "--raw-out",
            &output.to_string_lossy(),
        ],
    ));
    assert_eq!(fs::read(&output)?, [255u8, 2, 1, 0]);
    Ok(())
}

#[test]
fn repeat_reports_throughput_and_latency() -> TestResult {
    let root = tempfile::tempdir()?;
    let plugin = greeter_plugin(root.path())?;
    let output = call(
        root.path(),
        &plugin,
        &[
            "greet",
            r#"["x"]"#,
            "--repeat",
            "200",
            "--threads",
            "2",
            "--instances",
            "2",
        ],
    );
    succeeds(&output);
    let report = stderr(&output);
    assert!(report.contains("200 calls on 2 thread(s)"), "{report}");
    assert!(
        report.contains("calls/s") && report.contains("p99"),
        "{report}"
    );
    Ok(())
}

#[test]
fn timeout_interrupts_a_runaway_call_and_exits_non_zero() -> TestResult {
    let root = tempfile::tempdir()?;
    let plugin = greeter_plugin(root.path())?;
    let module = plugin.join("greeter.py");
    let runaway = fs::read_to_string(&module)?.replace(
        "    \"\"\"Summarises `values`; fails with `EMPTY_INPUT` when there are none.\"\"\"\n    raise NotImplementedError",
        "    \"\"\"Summarises `values`; fails with `EMPTY_INPUT` when there are none.\"\"\"\n    while True:\n        pass",
    );
    assert!(runaway.contains("while True"), "the stub changed shape");
    fs::write(&module, runaway)?;
    fails_with(
        &call(
            root.path(),
            &plugin,
            &["stats", "[[1.0], null]", "--timeout", "300ms"],
        ),
        &["`stats`", "my-greeter", "timed out"],
    );
    Ok(())
}

/// The forms a newcomer tries: NAME left out (it is in the manifest), arguments that are not JSON,
/// JSON given to a raw method, a wrong type, and a load that hangs.
#[test]
fn the_forms_a_newcomer_guesses_work_or_show_the_right_one() -> TestResult {
    let root = tempfile::tempdir()?;
    let plugin = greeter_plugin(root.path())?;
    let plugin_arg = plugin.to_string_lossy().into_owned();
    let without_name = |extra: &[&str]| {
        let mut args = vec!["call", plugin_arg.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--interface", GREETER, "--trait-name", "Greeter"]);
        fidius(root.path(), &args)
    };
    let out = succeeds(&without_name(&["greet", r#"["World"]"#]));
    assert_eq!(out.trim(), r#""Hello, World!""#);
    // NAME PACKAGE METHOD beside a folder named after the plugin: still read as NAME first (the
    // call then lacks its argument, rather than looking for a method called `greeter`).
    let beside = plugin.parent().expect("parent");
    fs::create_dir_all(beside.join("my-greeter"))?;
    fails_with(
        &fidius(
            beside,
            &[
                "call",
                "my-greeter",
                "greeter",
                "greet",
                "--interface",
                GREETER,
                "--trait-name",
                "Greeter",
            ],
        ),
        &["expected 1 argument(s), got 0"],
    );

    let not_json = without_name(&["greet", "World"]);
    fails_with(&not_json, &["`World` is not JSON", r#"greet '["World"]'"#]);
    fails_with(
        &without_name(&["echo", r#"["x"]"#]),
        &["`echo` is a raw method", "--raw-in FILE"],
    );
    fails_with(
        &without_name(&["greet", "[42]"]),
        &["argument `name` (position 0): expected a string, found integer 42"],
    );

    let module = plugin.join("greeter.py");
    let hanging = format!(
        "import time\ntime.sleep(3600)\n{}",
        fs::read_to_string(&module)?
    );
    fs::write(&module, hanging)?;
    fails_with(
        &without_name(&["greet", r#"["World"]"#, "--load-timeout", "500ms"]),
        &["my-greeter"],
    );
    Ok(())
}

/// A plugin written for the original fidius, whose methods lack `@method`: `fidius call` runs it
/// and says so; `--strict` refuses it.
#[test]
fn undecorated_methods_load_with_a_warning_unless_strict() -> TestResult {
    let root = tempfile::tempdir()?;
    let plugin = greeter_plugin(root.path())?;
    let module = plugin.join("greeter.py");
    let undecorated = fs::read_to_string(&module)?.replace("@method\n", "");
    fs::write(&module, undecorated)?;
    let lenient = call(root.path(), &plugin, &["greet", r#"["World"]"#]);
    let out = succeeds(&lenient);
    assert_eq!(out.trim(), r#""Hello, World!""#);
    assert!(
        stderr(&lenient).contains("warning: method `greet` is not decorated with @method"),
        "{}",
        stderr(&lenient)
    );
    fails_with(
        &call(root.path(), &plugin, &["greet", r#"["World"]"#, "--strict"]),
        &["`greet` is not decorated with @fidius.method"],
    );
    Ok(())
}

/// An interface with an untyped argument and a returned struct, for the two checks below.
const KEEPER: &str = "use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Facts {
    pub name: String,
}

#[plugin_interface(version = 1)]
pub trait Keeper {
    fn keep(&self, value: serde_json::Value) -> serde_json::Value;
    fn facts(&self) -> Facts;
}
";

/// `KEEPER` in `root/keeper.rs` and a plugin `root/keeper` made from its stub: `keep` gives its
/// argument back, `facts` returns `{"name": "x"}`.
fn keeper_plugin(root: &Path) -> Result<(PathBuf, PathBuf), Box<dyn std::error::Error>> {
    let interface = root.join("keeper.rs");
    fs::write(&interface, KEEPER)?;
    let dir = root.join("keeper");
    fs::create_dir_all(&dir)?;
    let module = dir.join("keeper.py");
    succeeds(&fidius(
        root,
        &[
            "python-stub",
            "--interface",
            &interface.to_string_lossy(),
            "--trait-name",
            "Keeper",
            "--out",
            &module.to_string_lossy(),
        ],
    ));
    let stub = fs::read_to_string(&module)?;
    let bodies = ["return value", "return {\"name\": \"x\"}"];
    let mut filled = String::new();
    let mut parts = stub.split("raise NotImplementedError");
    filled.push_str(parts.next().unwrap_or_default());
    for (body, rest) in bodies.iter().zip(parts) {
        filled.push_str(body);
        filled.push_str(rest);
    }
    fs::write(&module, filled)?;
    fs::write(
        dir.join("package.toml"),
        "[package]\nname = \"keeper\"\nversion = \"0.1.0\"\ninterface = \"Keeper\"\n\
         interface_version = 1\nruntime = \"python\"\n\n[python]\nentry_module = \"keeper\"\n",
    )?;
    Ok((interface, dir))
}

fn keeper_call(
    root: &Path,
    interface: &Path,
    plugin: &Path,
    extra: &[&str],
) -> std::process::Output {
    let interface = interface.to_string_lossy().into_owned();
    let plugin = plugin.to_string_lossy().into_owned();
    let mut args = vec!["call", "keeper", &plugin];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--interface", &interface, "--trait-name", "Keeper"]);
    fidius(root, &args)
}

#[test]
fn integers_beyond_64_bits_in_untyped_arguments_are_refused_in_both_tiers() -> TestResult {
    let root = tempfile::tempdir()?;
    let (interface, plugin) = keeper_plugin(root.path())?;
    for isolation in ["subinterpreter", "process"] {
        let call = |json: &str| {
            keeper_call(
                root.path(),
                &interface,
                &plugin,
                &["keep", json, "--isolation", isolation],
            )
        };
        fails_with(
            &call(r#"[{"id": 123456789012345678901234567890}]"#),
            &[
                "argument `value` (position 0): expected integers within 64 bits",
                "123456789012345678901234567890, an integer beyond 64 bits",
            ],
        );
        let output = call(r#"[{"id": 18446744073709551615, "f": 1e30}]"#);
        let exact: serde_json::Value = serde_json::from_str(succeeds(&output).trim())?;
        assert!(
            stderr(&output).contains(&format!("tier: {isolation}")),
            "{}",
            stderr(&output)
        );
        assert_eq!(
            exact,
            serde_json::json!({"id": 18446744073709551615_u64, "f": 1e30}),
            "{isolation}"
        );
    }
    Ok(())
}

/// A struct of the interface gains a field after the plugin's stub was generated: the interface
/// hash is unchanged, but the stub's `__interface_schema__` is not, and the load says so.
#[test]
fn a_plugin_whose_stub_predates_a_struct_change_is_refused_at_load() -> TestResult {
    let root = tempfile::tempdir()?;
    let (interface, plugin) = keeper_plugin(root.path())?;
    succeeds(&keeper_call(root.path(), &interface, &plugin, &["facts"]));
    fs::write(
        &interface,
        KEEPER.replace(
            "pub name: String,",
            "pub name: String,\n    pub count: u32,",
        ),
    )?;
    for isolation in ["subinterpreter", "process"] {
        fails_with(
            &keeper_call(
                root.path(),
                &interface,
                &plugin,
                &["facts", "--isolation", isolation],
            ),
            &[
                "plugin `keeper`: the structs of interface `Keeper` changed since its stub was generated",
                "regenerate the stub with `fidius python-stub`",
            ],
        );
    }
    Ok(())
}

#[test]
fn config_loads_a_configured_instance_in_both_tiers() -> TestResult {
    let root = tempfile::tempdir()?;
    let plugin = greeter_plugin(root.path())?;
    // The generated stub's module-level functions, turned into the methods of a configured object.
    let module = plugin.join("greeter.py");
    let stub = fs::read_to_string(&module)?;
    let header: String = stub
        .lines()
        .filter(|line| line.starts_with("__interface"))
        .map(|line| format!("{line}\n"))
        .collect();
    fs::write(
        &module,
        format!(
            "{header}\nclass Greeter:\n    def __init__(self, config):\n        self.greeting = config['greeting']\n\n    \
             def greet(self, name):\n        return f'{{self.greeting}}, {{name}}!'\n\n    \
             def stats(self, values, labels):\n        return None\n\n    \
             def echo(self, data):\n        return data\n\n\
             def __fidius_configure__(config):\n    return Greeter(config)\n"
        ),
    )?;
    for isolation in ["subinterpreter", "process"] {
        let out = succeeds(&call(
            root.path(),
            &plugin,
            &[
                "greet",
                r#"["World"]"#,
                "--config",
                r#"{"greeting": "Hej"}"#,
                "--isolation",
                isolation,
            ],
        ));
        assert_eq!(out.trim(), r#""Hej, World!""#, "{isolation}");
        fails_with(
            &call(
                root.path(),
                &plugin,
                &["greet", r#"["World"]"#, "--isolation", isolation],
            ),
            &["defines __fidius_configure__", "--config"],
        );
        fails_with(
            &call(
                root.path(),
                &plugin,
                &[
                    "greet",
                    "[]",
                    "--config",
                    "{not json",
                    "--isolation",
                    isolation,
                ],
            ),
            &["--config `{not json` is not JSON"],
        );
    }
    Ok(())
}
