//! The committed demo plugins stay what `ci/demo` claims they are: the generated stub for
//! `VersionReport`, filled in; two pin different major versions of python-semver, one builds on
//! numpy (which `isolation = "auto"` sends to the process tier).

use std::fs;
use std::path::{Path, PathBuf};

use fidius_core::interface::stub::{check_module, render_stub};
use fidius_core::interface::{find_interface, InterfaceSource};
use fidius_core::manifest::Manifest;
use fidius_demo::__fidius_VersionReport::VersionReport_PYTHON_DESCRIPTOR;

const PLUGINS: [&str; 3] = ["semver2", "semver3", "numpy"];
const SEMVER_PLUGINS: [&str; 2] = ["semver2", "semver3"];

fn plugin_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins")
        .join(name)
}

fn interface() -> InterfaceSource {
    find_interface(include_str!("../src/lib.rs"), "VersionReport").expect("lib.rs declares it")
}

#[test]
fn the_stub_generator_and_the_macro_agree_on_the_hash_and_the_schema() {
    let spec = interface().spec;
    assert_eq!(spec.hash, VersionReport_PYTHON_DESCRIPTOR.interface_hash);
    assert!(VersionReport_PYTHON_DESCRIPTOR.schema_fingerprint.is_some());
    assert_eq!(
        spec.schema_fingerprint,
        VersionReport_PYTHON_DESCRIPTOR.schema_fingerprint
    );
}

#[test]
fn each_plugin_is_the_generated_stub_filled_in() {
    let interface = interface();
    let stub = render_stub(&interface).expect("renders");
    for name in PLUGINS {
        let path = plugin_dir(name).join("version_report.py");
        let module = fs::read_to_string(&path).expect("read the plugin module");
        let drifts = check_module(&interface.spec, &module);
        assert!(drifts.is_empty(), "{}: {drifts:?}", path.display());
        // Every generated line but the placeholder bodies is still there, in order.
        let mut remaining = module.lines();
        for line in stub
            .lines()
            .filter(|line| line.trim() != "raise NotImplementedError")
        {
            assert!(
                remaining.any(|kept| kept == line),
                "{} lost or reordered the stub line {line:?}",
                path.display()
            );
        }
        assert!(
            !module.contains("NotImplementedError"),
            "{}",
            path.display()
        );
    }
}

#[test]
fn the_plugins_pin_different_major_versions_of_one_library() {
    let mut pins = Vec::new();
    for name in SEMVER_PLUGINS {
        let dir = plugin_dir(name);
        let manifest = Manifest::load(&dir).expect("valid package.toml");
        assert_eq!(
            manifest.package.interface,
            VersionReport_PYTHON_DESCRIPTOR.trait_name
        );
        assert_eq!(
            manifest.package.interface_version,
            VersionReport_PYTHON_DESCRIPTOR.version
        );
        let requirements = manifest
            .python
            .and_then(|python| python.requirements)
            .expect("the plugin has requirements");
        let text = fs::read_to_string(dir.join(requirements)).expect("read requirements");
        let pin = text
            .trim()
            .strip_prefix("semver==")
            .unwrap_or_else(|| panic!("{name} pins something other than semver: {text:?}"))
            .to_owned();
        pins.push(pin);
    }
    let majors: Vec<&str> = pins
        .iter()
        .filter_map(|pin| pin.split('.').next())
        .collect();
    assert_eq!(majors, ["2", "3"], "{pins:?}");
}

#[test]
fn the_numpy_plugin_leaves_the_tier_to_auto() {
    let dir = plugin_dir("numpy");
    let manifest = Manifest::load(&dir).expect("valid package.toml");
    let python = manifest.python.expect("a python package");
    // Routed by the probe `fidius pack` records, not by a hand-written `isolation = "process"`.
    assert_eq!(python.isolation, fidius_core::manifest::Isolation::Auto);
    let requirements = fs::read_to_string(dir.join(python.requirements.expect("requirements")))
        .expect("read requirements");
    assert!(
        requirements.trim().starts_with("numpy=="),
        "{requirements:?}"
    );
}
