use std::path::Path;

use super::*;

const EXAMPLE: &str = r#"
python = "3.13"

[[module]]
name = "_testmultiphase"
file = "vendor/_testmultiphase.cpython-313-x86_64-linux-gnu.so"
subinterpreter = true

[[module]]
name = "pkg._testsinglephase"
file = "vendor/pkg/_testsinglephase.cpython-313-x86_64-linux-gnu.so"
subinterpreter = false
reason = "ImportError: module _testsinglephase does not support loading in subinterpreters"
"#;

fn parse(text: &str) -> Result<ExtensionRecord, ExtensionsError> {
    ExtensionRecord::parse(text, Path::new("pkg/extensions.toml"))
}

#[test]
fn parses_and_round_trips() -> Result<(), ExtensionsError> {
    let record = parse(EXAMPLE)?;
    assert_eq!(
        record.python,
        PythonVersion {
            major: 3,
            minor: 13
        }
    );
    assert_eq!(record.modules.len(), 2);
    let refused: Vec<_> = record.refused().map(|m| m.name.as_str()).collect();
    assert_eq!(refused, ["pkg._testsinglephase"]);
    let written = record.to_toml()?;
    assert!(written.starts_with("# Written by `fidius pack`"));
    assert_eq!(parse(&written)?, record);
    Ok(())
}

#[test]
fn errors_name_the_file_and_field() {
    let cases = [
        (EXAMPLE.replace("\"3.13\"", "\"three\""), "python"),
        (
            EXAMPLE.replace("python = \"3.13\"\n", ""),
            "missing field `python`",
        ),
        (
            EXAMPLE.replace("name = \"_testmultiphase\"", "name = \"a-b\""),
            "`module[0].name`",
        ),
        (
            EXAMPLE.replace("vendor/pkg/", "vendor/../"),
            "`module[1].file`",
        ),
        (
            EXAMPLE.replace("vendor/_testmultiphase", "/etc/_testmultiphase"),
            "`module[0].file`",
        ),
        (
            EXAMPLE.replace("subinterpreter = true", "subinterpreter = \"yes\""),
            "subinterpreter",
        ),
        (
            EXAMPLE.replace("subinterpreter = true", "subinterpreter = true\nspeed = 1"),
            "speed",
        ),
    ];
    for (text, expected) in cases {
        let error = match parse(&text) {
            Ok(record) => panic!("accepted {record:?} from\n{text}"),
            Err(error) => error,
        };
        let message = format!(
            "{error}: {}",
            std::error::Error::source(&error).map_or(String::new(), |s| s.to_string())
        );
        assert!(message.contains("pkg/extensions.toml"), "{message}");
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message}"
        );
    }
}

#[test]
fn python_versions() {
    assert_eq!(
        "3.13.5".parse::<PythonVersion>().map(|v| v.to_string()),
        Ok("3.13".to_owned())
    );
    assert_eq!(
        "3.14.0rc1".parse::<PythonVersion>().map(|v| v.minor),
        Ok(14)
    );
    for bad in ["3", "", "3.x", "3.13rc1", "v3.13"] {
        assert!(bad.parse::<PythonVersion>().is_err(), "{bad}");
    }
}

#[test]
fn a_package_without_the_file_has_no_record() -> Result<(), Box<dyn std::error::Error>> {
    let root = tempfile::tempdir()?;
    assert_eq!(ExtensionRecord::load(root.path())?, None);
    let record = parse(EXAMPLE)?;
    assert!(record.write(root.path())?);
    assert!(!record.write(root.path())?, "rewrote an identical record");
    assert_eq!(ExtensionRecord::load(root.path())?, Some(record));
    Ok(())
}
