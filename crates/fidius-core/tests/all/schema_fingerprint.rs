//! The schema fingerprint covers what the interface hash leaves out: the serde structs and enums
//! the methods use. It changes when a field is added, renamed, retyped or moved, and not for
//! layout, comments, docs, derives or definitions the interface does not use; the stub carries it
//! and `python-stub --check` compares it when a module has it.

use fidius_core::interface::find_interface;
use fidius_core::interface::stub::{check_module, render_stub, Drift};

const BASE: &str = r#"
use serde::{Deserialize, Serialize};

/// Facts about a version.
#[derive(Debug, Serialize, Deserialize)]
pub struct Facts {
    pub name: String,
    pub count: u32,
    pub detail: Detail,
}

#[derive(Serialize, Deserialize)]
pub struct Detail {
    pub tags: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub enum Level { Low, High }

#[derive(Serialize, Deserialize)]
pub struct Unused {
    pub anything: bool,
}

#[plugin_interface(version = 1)]
pub trait Facter {
    fn facts(&self, text: String) -> Result<Facts, PluginError>;
    fn level(&self, levels: Vec<Option<Level>>) -> u8;
}
"#;

/// `(interface hash, schema fingerprint)` of `source`'s `Facter`.
fn fingerprints(source: &str) -> (u64, u64) {
    let spec = find_interface(source, "Facter")
        .unwrap_or_else(|error| panic!("{error}\n{source}"))
        .spec;
    let schema = spec.schema_fingerprint.expect("find_interface computes it");
    (spec.hash, schema)
}

fn edited(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is not in the base source");
    BASE.replacen(from, to, 1)
}

#[test]
fn adding_renaming_retyping_or_moving_a_used_field_changes_the_fingerprint_not_the_hash() {
    let (hash, schema) = fingerprints(BASE);
    let changes = [
        (
            "added",
            edited("pub count: u32,", "pub count: u32,\n    pub extra: bool,"),
        ),
        ("renamed", edited("pub count: u32,", "pub total: u32,")),
        ("retyped", edited("pub count: u32,", "pub count: u64,")),
        (
            "reordered",
            edited(
                "pub name: String,\n    pub count: u32,",
                "pub count: u32,\n    pub name: String,",
            ),
        ),
        (
            "nested struct field added",
            edited(
                "pub tags: Vec<String>,",
                "pub tags: Vec<String>,\n    pub more: u8,",
            ),
        ),
        (
            "serde rename",
            edited(
                "    pub name: String,",
                "    #[serde(rename = \"title\")]\n    pub name: String,",
            ),
        ),
        (
            "enum variant added (inside Vec<Option<_>>)",
            edited("Low, High", "Low, Medium, High"),
        ),
    ];
    for (what, source) in changes {
        let (changed_hash, changed_schema) = fingerprints(&source);
        assert_eq!(
            changed_hash, hash,
            "{what}: the interface hash must not move"
        );
        assert_ne!(
            changed_schema, schema,
            "{what}: the fingerprint must change"
        );
    }
}

#[test]
fn layout_comments_docs_derives_visibility_and_unused_types_leave_it_unchanged() {
    let (_, schema) = fingerprints(BASE);
    let same = [
        (
            "whitespace and comments",
            BASE.replace(
                "pub count: u32,",
                "pub   count :\n\n  u32 , // how many\n /* x */",
            ),
        ),
        (
            "doc comments",
            edited(
                "    pub count: u32,",
                "    /// How many.\n    pub count: u32,",
            ),
        ),
        (
            "derives",
            edited(
                "#[derive(Serialize, Deserialize)]\npub struct Detail",
                "#[derive(Clone, Serialize, Deserialize, PartialEq)]\npub struct Detail",
            ),
        ),
        ("visibility", edited("pub count: u32,", "count: u32,")),
        (
            "an unused struct",
            edited("pub anything: bool,", "pub anything: String,"),
        ),
        (
            "definition order",
            BASE.replacen(
                "#[derive(Serialize, Deserialize)]\npub enum Level { Low, High }\n",
                "",
                1,
            )
            .replacen(
                "use serde::{Deserialize, Serialize};\n",
                "use serde::{Deserialize, Serialize};\n\
                 #[derive(Serialize, Deserialize)]\npub enum Level { Low, High }\n",
                1,
            ),
        ),
        ("inside a module", format!("mod wire {{\n{BASE}\n}}\n")),
    ];
    for (what, source) in same {
        assert_eq!(fingerprints(&source).1, schema, "{what}:\n{source}");
    }
}

#[test]
fn the_stub_carries_the_fingerprint_and_check_compares_it_when_present() {
    let interface = find_interface(BASE, "Facter").expect("reads");
    let schema = interface.spec.schema_fingerprint.expect("computed");
    let stub = render_stub(&interface).expect("renders");
    let hash_line = format!("__interface_hash__ = {:#018x}\n", interface.spec.hash);
    let schema_line = format!("__interface_schema__ = {schema:#018x}\n");
    assert!(
        stub.contains(&format!("{hash_line}{schema_line}")),
        "the schema line follows the hash line:\n{stub}"
    );
    assert_eq!(check_module(&interface.spec, &stub), []);

    // The struct gains a field: the old stub's hash still matches, its schema does not.
    let changed = find_interface(
        &edited("pub count: u32,", "pub count: u32,\n    pub extra: bool,"),
        "Facter",
    )
    .expect("reads");
    let drifts = check_module(&changed.spec, &stub);
    let expected = changed.spec.schema_fingerprint.expect("computed");
    assert_eq!(
        drifts,
        [Drift::Schema {
            expected,
            found: format!("{schema:#018x}"),
        }]
    );
    let message = drifts[0].to_string();
    assert!(
        message.contains("a struct the methods use changed; regenerate the stub"),
        "{message}"
    );

    // A module written for the original fidius has no schema constant: nothing to compare.
    let original = stub.replace(&schema_line, "");
    assert_eq!(check_module(&changed.spec, &original), []);
}
