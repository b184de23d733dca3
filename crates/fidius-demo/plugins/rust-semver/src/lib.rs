//! `VersionReport` in Rust: the same interface as the demo's Python plugins (the trait is the
//! demo crate's own `src/lib.rs`, compiled here as a module), exported by `#[plugin_impl]`.

#[path = "../../../src/lib.rs"]
mod interface;

use fidius::{plugin_impl, PluginError};
use interface::{Report, VersionReport};

/// Every call is served by this one instance.
#[derive(Default)]
pub struct RustSemver;

#[plugin_impl(interface::VersionReport, name = "rust-semver")]
impl VersionReport for RustSemver {
    fn describe(&self, text: String) -> Result<Report, PluginError> {
        let version = semver::Version::parse(&text).map_err(|error| {
            PluginError::new("INVALID_VERSION", format!("{text:?} is not a full semantic version ({error})"))
                .with_details(serde_json::json!({ "input": text }))
        })?;
        Ok(Report {
            library: "semver-rs 1 (Rust, in the host process)".to_owned(),
            canonical: version.to_string(),
            next_minor: semver::Version::new(version.major, version.minor + 1, 0).to_string(),
        })
    }

    fn highest(&self, data: Vec<u8>) -> Vec<u8> {
        String::from_utf8_lossy(&data)
            .split_whitespace()
            .filter_map(|text| semver::Version::parse(text).ok())
            .max()
            .map(|version| version.to_string().into_bytes())
            .unwrap_or_default()
    }
}
