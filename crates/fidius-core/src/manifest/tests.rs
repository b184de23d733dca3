use super::*;

/// The shared example manifest, plus the optional `[python]` keys.
fn greeter() -> String {
    include_str!("../../tests/fixtures/package.toml").replace(
        "entry_module = \"greeter\"",
        "entry_module = \"greeter\"\nrequirements = \"requirements.txt\"\nisolation = \"subinterpreter\"",
    )
}

fn problems(text: &str) -> Vec<ManifestProblem> {
    match Manifest::parse(text, "package.toml") {
        Err(ManifestError::Invalid { problems, .. }) => problems,
        other => panic!("expected an invalid manifest, got {other:?}"),
    }
}

#[test]
fn parses_the_documented_example() {
    let manifest = Manifest::parse(&greeter(), "package.toml").expect("valid manifest");
    assert_eq!(manifest.package.name, "my-greeter");
    assert_eq!(manifest.package.version, semver::Version::new(0, 1, 0));
    assert_eq!(manifest.package.interface, "Greeter");
    assert_eq!(manifest.package.interface_version, 1);
    assert_eq!(manifest.package.runtime, Runtime::Python);
    assert_eq!(
        manifest.metadata.get("description").map(String::as_str),
        Some("A friendly greeting service.")
    );
    let python = manifest.python.expect("python table");
    assert_eq!(python.entry_module, "greeter");
    assert_eq!(python.requirements, Some(PathBuf::from("requirements.txt")));
    assert_eq!(python.isolation, Isolation::Subinterpreter);
    assert_eq!(
        Manifest::parse(&greeter(), "p")
            .map(|m| m.archive_stem())
            .ok(),
        Some("my-greeter-0.1.0".to_owned())
    );
}

#[test]
fn isolation_defaults_to_auto() {
    let text = greeter().replace("isolation = \"subinterpreter\"\n", "");
    let manifest = Manifest::parse(&text, "package.toml").expect("valid manifest");
    assert_eq!(manifest.python.map(|p| p.isolation), Some(Isolation::Auto));
}

#[test]
fn reports_every_problem_at_once() {
    let text = r#"
[package]
name = "My Greeter"
version = "one"
interface = "Greeter"
interface_version = -1
runtime = "python"
colour = "blue"

[python]
entry_module = "greeter-main"
isolation = "thread"
"#;
    let found: Vec<String> = problems(text).iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 6, "{found:#?}");
    assert!(found[0].contains("package.interface_version"), "{found:#?}");
    assert!(found[0].ends_with("found integer -1)"), "{found:#?}");
    assert!(
        found[1].contains("unknown key `package.colour`"),
        "{found:#?}"
    );
    assert!(found[2].contains("package.name"), "{found:#?}");
    assert!(found[3].contains("package.version"), "{found:#?}");
    assert!(found[4].contains("python.entry_module"), "{found:#?}");
    assert!(found[5].contains("python.isolation") && found[5].contains("\"thread\""));
}

#[test]
fn unknown_python_key_and_table_are_named() {
    let text = greeter().replace("isolation", "isolaton") + "\n[pyhton]\n";
    let found: Vec<String> = problems(&text).iter().map(ToString::to_string).collect();
    assert!(
        found.contains(&"unknown key `pyhton`".to_owned()),
        "{found:#?}"
    );
    assert!(
        found.contains(&"unknown key `python.isolaton`".to_owned()),
        "{found:#?}"
    );
}

#[test]
fn python_runtime_needs_python_table() {
    let full = greeter();
    let text = full.split("[python]").next().unwrap_or_default();
    assert!(matches!(
        problems(text).as_slice(),
        [ManifestProblem::MissingPythonTable]
    ));
}

#[test]
fn other_runtimes_are_rejected() {
    let text = greeter().replace("runtime = \"python\"", "runtime = \"wasm\"");
    assert!(matches!(
        problems(&text).as_slice(),
        [ManifestProblem::UnsupportedRuntime { runtime }] if runtime == "wasm"
    ));
}

#[test]
fn missing_fields_say_what_is_expected() {
    let message = Manifest::parse("[package]\nname = \"x\"\n", "dir/package.toml")
        .expect_err("incomplete")
        .to_string();
    assert!(
        message.starts_with("dir/package.toml is invalid"),
        "{message}"
    );
    assert!(
        message.contains("missing field `package.version` (expected a semantic version string)"),
        "{message}"
    );
}

#[test]
fn metadata_values_must_be_strings() {
    let text = greeter().replace("description = ", "stars = 5\ndescription = ");
    assert!(matches!(
        problems(&text).as_slice(),
        [ManifestProblem::WrongType { field, .. }] if field == "metadata.stars"
    ));
}

#[test]
fn requirements_must_stay_inside_the_package() {
    let text = greeter().replace("\"requirements.txt\"", "\"../requirements.txt\"");
    assert!(matches!(
        problems(&text).as_slice(),
        [ManifestProblem::RequirementsOutsidePackage { .. }]
    ));
}

#[test]
fn load_checks_files_exist() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join(MANIFEST_FILE), greeter())?;
    let Err(ManifestError::Invalid { problems, .. }) = Manifest::load(dir.path()) else {
        panic!("files are missing");
    };
    assert!(matches!(
        problems.as_slice(),
        [
            ManifestProblem::EntryModuleNotFound { .. },
            ManifestProblem::RequirementsNotFound { .. }
        ]
    ));
    std::fs::write(dir.path().join("requirements.txt"), "")?;
    std::fs::create_dir(dir.path().join("greeter"))?;
    std::fs::write(dir.path().join("greeter/__init__.py"), "")?;
    let manifest = Manifest::load(dir.path())?;
    assert_eq!(manifest.package.name, "my-greeter");
    Ok(())
}

#[test]
fn missing_file_is_a_read_error() {
    let error = Manifest::load(Path::new("/nonexistent/fidius")).expect_err("no such dir");
    assert!(matches!(error, ManifestError::Read { .. }));
    assert_eq!(
        error.to_string(),
        "/nonexistent/fidius/package.toml does not exist"
    );
}

const RUST_PACKAGE: &str =
    "[package]\nname = \"rs\"\nversion = \"1.0.0\"\ninterface = \"Greeter\"\n\
                            interface_version = 1\nruntime = \"rust\"\n";

#[test]
fn a_rust_package_names_its_library_inside_the_package() {
    let text = format!("{RUST_PACKAGE}[rust]\nlibrary = \"lib/librs.so\"\nplugin = \"rs\"\n");
    let manifest = Manifest::parse(&text, "package.toml").expect("valid manifest");
    assert_eq!(manifest.package.runtime, Runtime::Rust);
    assert!(manifest.python.is_none());
    let rust = manifest.rust.expect("rust table");
    assert_eq!(rust.library, PathBuf::from("lib/librs.so"));
    assert_eq!(rust.plugin.as_deref(), Some("rs"));

    assert!(matches!(
        problems(RUST_PACKAGE).as_slice(),
        [ManifestProblem::MissingRustTable]
    ));
    let outside = format!("{RUST_PACKAGE}[rust]\nlibrary = \"../librs.so\"\n");
    assert!(matches!(
        problems(&outside).as_slice(),
        [ManifestProblem::LibraryOutsidePackage { path }] if path == "../librs.so"
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!("{RUST_PACKAGE}[rust]\nlibrary = \"lib/librs.so\"\n");
    std::fs::write(dir.path().join(MANIFEST_FILE), text).expect("write");
    let error = Manifest::load(dir.path()).expect_err("no library yet");
    assert!(
        error.to_string().contains("fidius package build"),
        "{error}"
    );
}
