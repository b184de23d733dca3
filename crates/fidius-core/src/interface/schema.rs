//! The schema fingerprint: what the interface hash leaves out.
//!
//! The interface hash stays equal to the original fidius's, so it covers method signatures only:
//! add a field to a struct a method returns and the hash does not change, an old plugin still
//! loads, and its calls fail later when the result does not deserialize. The fingerprint covers
//! the definitions of the serde structs and enums the methods use, and travels beside the hash:
//! the macro puts it in the descriptor, `fidius python-stub` writes it as `__interface_schema__`,
//! and the host refuses a plugin whose constant differs (a plugin without one loads as before).
//!
//! [`schema_fingerprint`] is the one place it is computed; the macro and `python-stub` both call it
//! on the items of the file that declares the trait, so for the same source they agree.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::{Attribute, Fields, Item, Visibility};

use super::canonical::canonical_tokens;
use super::fnv::fnv1a_64;
use super::source::derives_serde;
use super::spec::InterfaceSpec;

/// The schema fingerprint of `spec`, given the items of the file that declares it.
///
/// FNV-1a 64 over the canonical definitions (sorted by bytes, joined with `\n`) of every struct or
/// enum in `items` (inline `mod` blocks included) that derives `Serialize` or `Deserialize` and
/// that a method's argument or return type names, directly or through the fields of another such
/// type. A definition is its tokens without doc comments, visibility and attributes other than
/// `#[serde(...)]`: names, field types and their order count; whitespace, comments and the order
/// of the definitions in the file do not. Types declared in other files are not covered.
pub fn schema_fingerprint(spec: &InterfaceSpec, items: &[Item]) -> u64 {
    let mut definitions = BTreeMap::new();
    collect(items, &mut definitions);
    let mut pending = Vec::new();
    for method in &spec.methods {
        for arg in &method.args {
            names_in(arg.ty.to_token_stream(), &mut pending);
        }
        if let Some(output) = &method.output {
            names_in(output.to_token_stream(), &mut pending);
        }
    }
    let mut visited = BTreeSet::new();
    let mut used: Vec<&str> = Vec::new();
    while let Some(name) = pending.pop() {
        if !visited.insert(name.clone()) {
            continue;
        }
        for definition in definitions.get(&name).into_iter().flatten() {
            used.push(&definition.text);
            pending.extend(definition.names.iter().cloned());
        }
    }
    used.sort_unstable();
    fnv1a_64(used.join("\n").as_bytes())
}

/// One serde type's canonical text and the identifiers its field types name.
struct Definition {
    text: String,
    names: Vec<String>,
}

fn collect(items: &[Item], definitions: &mut BTreeMap<String, Vec<Definition>>) {
    for item in items {
        let (name, definition) = match item {
            Item::Mod(module) => {
                if let Some((_, inner)) = &module.content {
                    collect(inner, definitions);
                }
                continue;
            }
            Item::Struct(item) if derives_serde(&item.attrs) => {
                let mut item = item.clone();
                item.vis = Visibility::Inherited;
                keep_serde_attributes(&mut item.attrs);
                let names = clean_fields(&mut item.fields);
                let text = canonical_tokens(item.to_token_stream());
                (item.ident.to_string(), Definition { text, names })
            }
            Item::Enum(item) if derives_serde(&item.attrs) => {
                let mut item = item.clone();
                item.vis = Visibility::Inherited;
                keep_serde_attributes(&mut item.attrs);
                let mut names = Vec::new();
                for variant in &mut item.variants {
                    keep_serde_attributes(&mut variant.attrs);
                    names.extend(clean_fields(&mut variant.fields));
                }
                let text = canonical_tokens(item.to_token_stream());
                (item.ident.to_string(), Definition { text, names })
            }
            _ => continue,
        };
        definitions.entry(name).or_default().push(definition);
    }
}

/// Drops what does not reach the wire from `fields`; returns the identifiers their types name.
fn clean_fields(fields: &mut Fields) -> Vec<String> {
    let mut names = Vec::new();
    for field in fields.iter_mut() {
        field.vis = Visibility::Inherited;
        keep_serde_attributes(&mut field.attrs);
        names_in(field.ty.to_token_stream(), &mut names);
    }
    names
}

/// Doc comments, derives and other attributes do not change the JSON; `#[serde(...)]` does.
fn keep_serde_attributes(attrs: &mut Vec<Attribute>) {
    attrs.retain(|attr| attr.path().is_ident("serde"));
}

fn names_in(tokens: TokenStream, names: &mut Vec<String>) {
    for tree in tokens {
        match tree {
            TokenTree::Ident(ident) => names.push(ident.to_string()),
            TokenTree::Group(group) => names_in(group.stream(), names),
            TokenTree::Punct(_) | TokenTree::Literal(_) => {}
        }
    }
}
