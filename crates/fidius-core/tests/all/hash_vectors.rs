//! Every vector the original fidius macro produced (`crates/fidius-core/interop/hash-vectors.json`) must get
//! the same canonical strings and hash from `fidius_core::interface`.

use std::path::PathBuf;

use fidius_core::interface::find_interface;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    #[serde(rename = "trait")]
    trait_name: String,
    source: String,
    hash: String,
    canonical: Vec<String>,
}

fn vectors() -> Vec<Vector> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/hash-vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read the interop vectors at {}: {error}",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("hash-vectors.json is valid JSON")
}

#[test]
fn every_vector_matches_the_original_macro() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 128, "the spec ships 128 vectors");
    let mut failures = Vec::new();
    for vector in &vectors {
        let source = match find_interface(&vector.source, &vector.trait_name) {
            Ok(source) => source,
            Err(error) => {
                failures.push(format!("{}: {error}", vector.trait_name));
                continue;
            }
        };
        let spec = &source.spec;
        let mut canonical: Vec<&str> = spec
            .methods
            .iter()
            .filter(|method| method.optional_since.is_none())
            .map(|method| method.signature.as_str())
            .collect();
        canonical.sort_unstable();
        let expected = u64::from_str_radix(vector.hash.trim_start_matches("0x"), 16)
            .expect("vector hash is hex");
        if canonical != vector.canonical || spec.hash != expected {
            failures.push(format!(
                "{}: got {:#018x} {canonical:?}, expected {} {:?}",
                vector.trait_name, spec.hash, vector.hash, vector.canonical
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} vector(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
