//! Each way a plugin can fail the load-time checks gives its own error, and the host carries on.

use fidius_host::{
    LoadError, LoadOptions, LoadWarning, PluginCall, PluginSource, PythonPluginHandle,
};

use crate::support::{self, TESTER, TESTER_PLUGIN, TRANSFORM};

fn load_with(module: &str, extra: &[(&str, &str)]) -> Result<PythonPluginHandle, LoadError> {
    load_with_options(module, extra, &LoadOptions::default())
}

fn load_with_options(
    module: &str,
    extra: &[(&str, &str)],
    options: &LoadOptions,
) -> Result<PythonPluginHandle, LoadError> {
    let root = tempfile::tempdir().unwrap();
    let conflictlib = support::conflictlib("1.0", 1);
    let mut files = vec![
        ("tester.py", module),
        ("vendor/conflictlib/__init__.py", conflictlib.as_str()),
    ];
    files.extend_from_slice(extra);
    let dir = support::write_plugin(root.path(), "checked", &files);
    PythonPluginHandle::start(
        PluginSource::new("checked", "1.0.0", dir, "tester"),
        &TESTER,
        options,
    )
}

fn rejected(module: &str) -> LoadError {
    match load_with(module, &[]) {
        Ok(_) => panic!("plugin was accepted:\n{module}"),
        Err(error) => error,
    }
}

#[test]
fn wrong_hash_shows_both_values_and_the_trait() {
    let error = rejected(&TESTER_PLUGIN.replace("0x9e3779b97f4a7c15", "0x1"));
    assert!(matches!(
        error,
        LoadError::InterfaceHashMismatch {
            expected: support::TESTER_HASH,
            found: 1,
            ..
        }
    ));
    let text = error.to_string();
    assert!(
        text.contains("0x9e3779b97f4a7c15") && text.contains("0x0000000000000001"),
        "{text}"
    );
    assert!(
        text.contains("Tester") && text.contains("checked"),
        "{text}"
    );
}

#[test]
fn missing_hash_is_its_own_error() {
    let error = rejected(&TESTER_PLUGIN.replace("__interface_hash__ = 0x9e3779b97f4a7c15", ""));
    assert!(
        matches!(error, LoadError::InterfaceHashMissing { .. }),
        "{error}"
    );
}

#[test]
fn interface_name_and_version_are_checked_when_present() {
    let error =
        rejected(&TESTER_PLUGIN.replace("__interface__ = \"Tester\"", "__interface__ = \"Other\""));
    assert!(
        matches!(error, LoadError::InterfaceNameMismatch { ref found, .. } if found == "Other"),
        "{error}"
    );
    let error =
        rejected(&TESTER_PLUGIN.replace("__interface_version__ = 1", "__interface_version__ = 2"));
    assert!(
        matches!(
            error,
            LoadError::InterfaceVersionMismatch { expected: 1, .. }
        ),
        "{error}"
    );
    // Another spelling of the trait's name (the original never compared them): a warning, unless
    // strict.
    let spelled = TESTER_PLUGIN.replace("__interface__ = \"Tester\"", "__interface__ = \"tester\"");
    let handle = load_with(&spelled, &[]).expect("lenient load");
    assert_eq!(
        handle.info().warnings,
        [LoadWarning::InterfaceName {
            found: "tester".to_owned(),
            expected: "Tester".to_owned()
        }]
    );
    let strict = load_with_options(&spelled, &[], &LoadOptions::default().strict(true))
        .err()
        .expect("strict refuses");
    assert!(
        matches!(strict, LoadError::InterfaceNameMismatch { ref found, .. } if found == "tester"),
        "{strict}"
    );
    // Plugins made for the original tool carry neither constant, and load.
    let original_style = TESTER_PLUGIN
        .replace("__interface__ = \"Tester\"", "")
        .replace("__interface_version__ = 1", "");
    assert!(load_with(&original_style, &[]).is_ok());
}

#[test]
fn missing_undecorated_uncallable_and_wrong_arity_methods_are_named() {
    let missing = rejected(&TESTER_PLUGIN.replace("def echo(data):", "def not_echo(data):"));
    assert!(
        matches!(missing, LoadError::MissingMethod { ref method, .. } if method == "echo"),
        "{missing}"
    );

    // The original fidius never required @method: such a plugin loads, with a warning, unless
    // strict. Both tiers check the same report.
    let undecorated = TESTER_PLUGIN.replace("@method\ndef echo", "def echo");
    let process = LoadOptions::default()
        .isolation(fidius_core::manifest::Isolation::Process)
        .worker_command(fidius_host::WorkerCommand::new(env!(
            "CARGO_BIN_EXE_fidius-worker"
        )));
    for options in [LoadOptions::default(), process] {
        let handle = load_with_options(&undecorated, &[], &options).expect("lenient load");
        assert_eq!(
            handle.info().warnings,
            [LoadWarning::NotDecorated {
                method: "echo".to_owned()
            }]
        );
        assert_eq!(handle.call_raw(support::ECHO, b"hi").unwrap(), b"hi");
        let strict = load_with_options(&undecorated, &[], &options.strict(true))
            .err()
            .expect("strict refuses");
        assert!(
            matches!(strict, LoadError::NotDecorated { ref method, .. } if method == "echo"),
            "{strict}"
        );
    }

    let uncallable = rejected(&format!("{TESTER_PLUGIN}\necho = 42\n"));
    assert!(
        matches!(uncallable, LoadError::NotCallable { ref method, .. } if method == "echo"),
        "{uncallable}"
    );

    let arity = rejected(&TESTER_PLUGIN.replace("def echo(data):", "def echo(data, extra):"));
    assert!(
        matches!(arity, LoadError::ArityMismatch { ref method, expected: 1, .. } if method == "echo"),
        "{arity}"
    );
    assert!(arity.to_string().contains("(data, extra)"), "{arity}");

    // Defaults and *args that still accept the interface's arity are fine.
    let flexible = TESTER_PLUGIN.replace("def echo(data):", "def echo(data, extra=None, *rest):");
    assert!(load_with(&flexible, &[]).is_ok());
}

#[test]
fn syntax_import_and_missing_module_errors_are_distinct() {
    let source = format!("{TESTER_PLUGIN}\ndef broken(:\n");
    let broken_line = source
        .lines()
        .position(|l| l.starts_with("def broken"))
        .unwrap()
        + 1;
    let syntax = rejected(&source);
    match &syntax {
        LoadError::Syntax { file, line, .. } => {
            assert!(file.ends_with("tester.py"), "{file}");
            assert_eq!(*line as usize, broken_line);
        }
        other => panic!("expected Syntax, got {other}"),
    }

    let broken_vendor = load_with(
        TESTER_PLUGIN,
        &[(
            "vendor/conflictlib/__init__.py",
            "raise ImportError('vendored build is broken')\n",
        )],
    )
    .err()
    .expect("import error");
    match &broken_vendor {
        LoadError::Import { exception, .. } => {
            assert_eq!(exception.type_name, "ImportError");
            assert_eq!(exception.message, "vendored build is broken");
        }
        other => panic!("expected Import, got {other}"),
    }

    let at_import_exit = rejected(&format!("import sys\nsys.exit(1)\n{TESTER_PLUGIN}"));
    assert!(
        matches!(&at_import_exit, LoadError::Import { exception, .. } if exception.type_name == "SystemExit")
    );

    let root = tempfile::tempdir().unwrap();
    let dir = support::write_plugin(root.path(), "empty", &[("other.py", "")]);
    let missing = PythonPluginHandle::start(
        PluginSource::new("empty", "1.0.0", &dir, "tester"),
        &TESTER,
        &LoadOptions::default(),
    )
    .err()
    .expect("missing entry module");
    assert!(
        matches!(missing, LoadError::EntryModuleNotFound { ref module, .. } if module == "tester"),
        "{missing}"
    );
}

#[test]
fn a_rejected_plugin_leaves_the_host_able_to_load_others() {
    for _ in 0..3 {
        rejected(&TESTER_PLUGIN.replace("0x9e3779b97f4a7c15", "0x2"));
        let _ = load_with("def broken(:\n", &[]);
    }
    let root = tempfile::tempdir().unwrap();
    let good = support::start_tester(root.path(), "good", "1.0", 5, 2);
    let out = good.call_typed_json(TRANSFORM, b"[2]").unwrap();
    assert!(String::from_utf8(out).unwrap().contains("\"result\":10"));
}

#[test]
fn zero_instances_is_rejected() {
    let root = tempfile::tempdir().unwrap();
    let dir = support::tester_plugin(root.path(), "none", "1.0", 1);
    let error = PythonPluginHandle::start(
        PluginSource::new("none", "1.0.0", dir, "tester"),
        &TESTER,
        &LoadOptions::default().instances(0),
    )
    .err()
    .expect("zero instances");
    assert!(matches!(error, LoadError::InvalidOptions { .. }));
}
