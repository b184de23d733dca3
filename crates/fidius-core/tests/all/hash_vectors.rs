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

/// A bidirectional method (`Stream<T>` in and out), which the 128 vectors lack: by the original's
/// `fidius_guest::hash::signature_string` (`{name}:{args}->{ret}` then `!raw`, `!stream`, `<stream`,
/// each item type standing for its `Stream<T>`), it is `map:u64->u64!stream<stream`; the hash is
/// FNV-1a 64 of that string (computed independently, in Python, from the same rules).
#[test]
fn a_bidirectional_method_carries_both_markers_in_the_original_order() {
    let source = "#[fidius::plugin_interface(version = 1, buffer = PluginAllocated)]\n\
        pub trait Mapper: Send + Sync {\n    fn map(&self, items: fidius::Stream<u64>) -> fidius::Stream<u64>;\n}\n";
    let spec = find_interface(source, "Mapper").expect("reads").spec;
    assert_eq!(spec.methods[0].signature, "map:u64->u64!stream<stream");
    assert_eq!(spec.hash, 0xe321_a6dd_bd90_4687);
    assert!(spec.methods[0].streams_output && spec.methods[0].streams_input);

    let both = "#[fidius::plugin_interface(version = 1)]\n\
        pub trait Ticks {\n    fn tick(&self, n: u32) -> fidius::Stream<u64>;\n    fn total(&self, items: fidius::Stream<u64>) -> u64;\n}\n";
    assert_eq!(
        find_interface(both, "Ticks").expect("reads").spec.hash,
        0xda02_6e90_56b5_c364
    );
}
