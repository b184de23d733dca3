//! Build-script helper for crates whose binaries, tests or examples embed CPython through fidius.
//!
//! Such an executable needs `libpython3.x.so` at start-up, before `main`. fidius-ffi knows the
//! folder it linked against, but an rpath only reaches an executable through the build script of
//! the package that owns it: cargo applies `cargo:rustc-link-arg` to the emitting package's own
//! targets and never to dependents. So a host crate's `build.rs` is one line in `main`:
//!
//! ```no_run
//! // build.rs: fn main() { ... }
//! fidius_build::link_python();
//! ```
//!
//! with `fidius-build` under `[build-dependencies]` and `fidius` (feature `host`) under
//! `[dependencies]`. The folders come from fidius-ffi's build script (links metadata, forwarded by
//! the `fidius` facade), so the rpath is always the libpython the executable was linked against.
#![forbid(unsafe_code)]

use std::ffi::OsString;

/// The links metadata carrying libpython's folders and the interpreter's path: fidius-ffi's own
/// (`links = "fidius_python"`, seen by crates depending on it directly) and the `fidius`
/// facade's forwarded copy (`links = "fidius"`, seen by host crates).
const SOURCES: [(&str, &str); 2] = [
    ("DEP_FIDIUS_PYTHON_RPATH", "DEP_FIDIUS_PYTHON_EXECUTABLE"),
    ("DEP_FIDIUS_RPATH", "DEP_FIDIUS_EXECUTABLE"),
];

/// What fidius-ffi recorded about the Python it linked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkedPython {
    /// libpython's folder(s), joined like `PATH` (`std::env::split_paths` reads them).
    pub rpath: Option<OsString>,
    /// The interpreter's path, when known.
    pub executable: Option<OsString>,
}

impl LinkedPython {
    /// Reads the links metadata of this build script's environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var_os(name))
    }

    fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let found = SOURCES
            .iter()
            .find(|(rpath, _)| var(rpath).is_some())
            .unwrap_or(&SOURCES[0]);
        LinkedPython {
            rpath: var(found.0),
            executable: var(found.1),
        }
    }

    /// The `cargo:` lines [`link_python`] prints.
    pub fn link_instructions(&self) -> Vec<String> {
        let mut lines: Vec<String> = match &self.rpath {
            Some(dirs) => std::env::split_paths(dirs)
                .filter(|dir| !dir.as_os_str().is_empty())
                .map(|dir| format!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display()))
                .collect(),
            None => vec![
                "cargo:warning=fidius_build::link_python: no libpython folder to record; depend on \
                 `fidius` with feature `host` (or on fidius-host) so executables find libpython"
                    .to_owned(),
            ],
        };
        if let Some(executable) = &self.executable {
            lines.push(format!(
                "cargo:rustc-env=FIDIUS_BUILD_PYTHON={}",
                executable.to_string_lossy()
            ));
        }
        lines
    }

    /// The `cargo:` metadata lines [`forward_python_metadata`] prints.
    pub fn forward_instructions(&self) -> Vec<String> {
        let rpath = self
            .rpath
            .iter()
            .map(|dirs| format!("cargo:rpath={}", dirs.to_string_lossy()));
        let executable = self
            .executable
            .iter()
            .map(|path| format!("cargo:executable={}", path.to_string_lossy()));
        rpath.chain(executable).collect()
    }
}

/// Records libpython's folder as the rpath of this package's binaries, tests and examples, so they
/// start without `LD_LIBRARY_PATH`, and the interpreter's path as the compile-time variable
/// `FIDIUS_BUILD_PYTHON` (`option_env!("FIDIUS_BUILD_PYTHON")`). Call it from `build.rs`.
pub fn link_python() {
    for line in LinkedPython::from_env().link_instructions() {
        println!("{line}");
    }
}

/// Hands the same metadata on to the dependents of a package declaring `links` (the `fidius`
/// facade uses it, so host crates see it as `DEP_FIDIUS_*`).
pub fn forward_python_metadata() {
    for line in LinkedPython::from_env().forward_instructions() {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;

    use super::LinkedPython;

    fn read(vars: &[(&str, &str)]) -> LinkedPython {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), OsString::from(value)))
            .collect();
        LinkedPython::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn direct_fidius_ffi_metadata_becomes_one_rpath_per_folder() {
        let python = read(&[
            ("DEP_FIDIUS_PYTHON_RPATH", "/opt/py/lib:/opt/py/frameworks"),
            ("DEP_FIDIUS_PYTHON_EXECUTABLE", "/opt/py/bin/python3"),
        ]);
        assert_eq!(
            python.link_instructions(),
            [
                "cargo:rustc-link-arg=-Wl,-rpath,/opt/py/lib",
                "cargo:rustc-link-arg=-Wl,-rpath,/opt/py/frameworks",
                "cargo:rustc-env=FIDIUS_BUILD_PYTHON=/opt/py/bin/python3",
            ]
        );
    }

    #[test]
    fn facade_metadata_is_read_and_forwarded_unchanged() {
        let python = read(&[
            ("DEP_FIDIUS_RPATH", "/opt/py/lib"),
            ("DEP_FIDIUS_EXECUTABLE", "/opt/py/bin/python3"),
        ]);
        assert_eq!(
            python.link_instructions()[0],
            "cargo:rustc-link-arg=-Wl,-rpath,/opt/py/lib"
        );
        assert_eq!(
            python.forward_instructions(),
            [
                "cargo:rpath=/opt/py/lib",
                "cargo:executable=/opt/py/bin/python3"
            ]
        );
    }

    #[test]
    fn missing_metadata_is_a_build_warning_not_a_silent_no_op() {
        let lines = read(&[]).link_instructions();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("cargo:warning="), "{lines:?}");
    }
}
