//! The Python distributions vendored into a package, read from `vendor/*.dist-info/METADATA`.

use std::fs;
use std::path::Path;

use crate::PackageError;

/// Directory that `fidius pack` vendors requirements into.
pub const VENDOR_DIR: &str = "vendor";

/// One installed distribution found in `vendor/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VendoredDistribution {
    pub name: String,
    pub version: String,
}

/// Lists `PACKAGE/vendor/*.dist-info`, sorted by name; an absent `vendor/` gives an empty list.
///
/// Name and version come from the `Name:` and `Version:` headers of `METADATA`, or, when that
/// file lacks them, from the directory name (`NAME-VERSION.dist-info`).
pub fn vendored_distributions(
    package_dir: &Path,
) -> Result<Vec<VendoredDistribution>, PackageError> {
    let vendor = package_dir.join(VENDOR_DIR);
    let entries = match fs::read_dir(&vendor) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PackageError::Io {
                path: vendor,
                source,
            })
        }
    };
    let mut distributions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(PackageError::io(&vendor))?;
        let file_name = entry.file_name();
        let Some(stem) = file_name
            .to_str()
            .and_then(|n| n.strip_suffix(".dist-info"))
        else {
            continue;
        };
        let metadata_path = entry.path().join("METADATA");
        let metadata = match fs::read_to_string(&metadata_path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(PackageError::Io {
                    path: metadata_path,
                    source,
                })
            }
        };
        let (fallback_name, fallback_version) = stem.split_once('-').unwrap_or((stem, ""));
        distributions.push(VendoredDistribution {
            name: header(&metadata, "Name")
                .unwrap_or(fallback_name)
                .to_owned(),
            version: header(&metadata, "Version")
                .unwrap_or(fallback_version)
                .to_owned(),
        });
    }
    distributions.sort();
    Ok(distributions)
}

/// A header from the RFC 822-style block that starts a `METADATA` file.
fn header<'a>(metadata: &'a str, key: &str) -> Option<&'a str> {
    metadata
        .lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case(key).then(|| value.trim())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_metadata_and_falls_back_to_the_directory_name(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        assert!(vendored_distributions(dir.path())?.is_empty());
        let vendor = dir.path().join(VENDOR_DIR);
        fs::create_dir_all(vendor.join("six-1.17.0.dist-info"))?;
        fs::write(
            vendor.join("six-1.17.0.dist-info/METADATA"),
            "Metadata-Version: 2.1\nName: six\nVersion: 1.17.0\n\nVersion: not-a-header\n",
        )?;
        fs::create_dir_all(vendor.join("Bare_Pkg-2.0.dist-info"))?;
        fs::create_dir_all(vendor.join("six"))?;
        assert_eq!(
            vendored_distributions(dir.path())?,
            [
                VendoredDistribution {
                    name: "Bare_Pkg".into(),
                    version: "2.0".into()
                },
                VendoredDistribution {
                    name: "six".into(),
                    version: "1.17.0".into()
                },
            ]
        );
        Ok(())
    }
}
