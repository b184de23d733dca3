//! Parse, validate, then generate. Every problem found is reported, each at its own span.

use fidius_core::interface::{
    schema_fingerprint, InterfaceAttr, InterfaceErrors, InterfaceSpec, METHOD_HELPER_ATTRIBUTES,
    TRAIT_HELPER_ATTRIBUTES,
};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{ItemTrait, TraitItem};

use crate::{client, descriptor, rust_table};

/// The macro's whole output for one trait: the cleaned trait plus the generated items, or the
/// trait plus `compile_error!`s (keeping the trait avoids a cascade of "not found" errors).
/// Generated code names fidius-core's items through `root` (see [`CoreRoot`]).
///
/// `source` is the text of the file declaring the trait, where the serde structs its methods use
/// are looked up for the schema fingerprint; `None` leaves the fingerprint out.
pub fn expand(
    attr: TokenStream,
    item: TokenStream,
    root: CoreRoot,
    source: Option<&str>,
) -> TokenStream {
    let root = root.path();
    let item: ItemTrait = match syn::parse2(item) {
        Ok(item) => item,
        Err(error) => return error.into_compile_error(),
    };
    let cleaned = strip_helper_attributes(item.clone());
    match analyze(attr, &item).and_then(|spec| check_wire(&spec).map(|()| spec)) {
        Ok(mut spec) => {
            // A file that does not parse is being compiled anyway, and rustc reports it.
            if let Some(file) = source.and_then(|text| syn::parse_file(text).ok()) {
                spec.schema_fingerprint = Some(schema_fingerprint(&spec, &file.items));
            }
            let descriptor = descriptor::generate(&item, &spec, &root);
            let client = client::generate(&item, &spec, &root);
            let rust_table = rust_table::generate(&item, &spec, &root);
            quote! { #cleaned #descriptor #client #rust_table }
        }
        Err(error) => {
            let errors = error.into_compile_error();
            quote! { #cleaned #errors }
        }
    }
}

/// The text of the file the trait is written in, read the way `fidius python-stub` reads an
/// interface file. `None` when the compiler cannot say (before Rust 1.88, or a trait made by
/// another macro) or the file cannot be read.
pub fn declaring_file(item: &TokenStream) -> Option<String> {
    let span = item.clone().into_iter().next()?.span();
    std::fs::read_to_string(span.local_file()?).ok()
}

/// How generated code reaches fidius-core: an interface crate depends either on `fidius-core`
/// itself or only on the `fidius` facade, which re-exports it as `fidius::__private::core`.
/// Each entry point of the macro knows which one it is, so nothing has to guess from manifests.
#[derive(Debug, Clone, Copy)]
pub enum CoreRoot {
    /// `::fidius_core`, for `fidius_macro::plugin_interface`.
    FidiusCore,
    /// `::fidius::__private::core`, for `fidius::plugin_interface`.
    Facade,
}

impl CoreRoot {
    pub(crate) fn path(self) -> TokenStream {
        match self {
            CoreRoot::FidiusCore => quote!(::fidius_core),
            CoreRoot::Facade => quote!(::fidius::__private::core),
        }
    }
}

/// Reads the attribute and the trait with the shared `fidius_core` function; both are checked
/// even when the attribute is wrong, so all problems surface at once.
pub fn analyze(attr: TokenStream, item: &ItemTrait) -> syn::Result<InterfaceSpec> {
    let parsed_attr = InterfaceAttr::parse(attr, Span::call_site());
    let fallback = InterfaceAttr { version: 0 };
    let spec = InterfaceSpec::from_trait(item, parsed_attr.as_ref().unwrap_or(&fallback));
    match (parsed_attr, spec) {
        (Ok(_), Ok(spec)) => Ok(spec),
        (attr_result, spec_result) => {
            let mut problems = attr_result.err().map(|errors| errors.0).unwrap_or_default();
            problems.extend(spec_result.err().map(|errors| errors.0).unwrap_or_default());
            Err(InterfaceErrors(problems).to_syn_error())
        }
    }
}

/// The types a Python plugin cannot serve, refused with the function `python-stub` uses too.
fn check_wire(spec: &InterfaceSpec) -> syn::Result<()> {
    let problems = spec.python_wire_problems();
    if problems.is_empty() {
        return Ok(());
    }
    Err(InterfaceErrors(problems).to_syn_error())
}

fn strip_helper_attributes(mut item: ItemTrait) -> ItemTrait {
    item.attrs.retain(|attr| {
        !TRAIT_HELPER_ATTRIBUTES
            .iter()
            .any(|name| attr.path().is_ident(name))
    });
    for trait_item in &mut item.items {
        if let TraitItem::Fn(method) = trait_item {
            method.attrs.retain(|attr| {
                !METHOD_HELPER_ATTRIBUTES
                    .iter()
                    .any(|name| attr.path().is_ident(name))
            });
        }
    }
    item
}

#[cfg(test)]
mod tests {
    //! The macro's hash against `python-stub`'s for every interop vector's trait.

    use std::path::PathBuf;

    use fidius_core::interface::{find_interface, is_interface_attribute, stub::render_stub};
    use syn::ItemTrait;

    use super::{analyze, expand, CoreRoot};

    #[derive(serde::Deserialize)]
    struct Vector {
        #[serde(rename = "trait")]
        trait_name: String,
        source: String,
        hash: String,
    }

    fn vectors() -> Vec<Vector> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fidius-core/interop/hash-vectors.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!(
                "cannot read the interop vectors at {} ({error})",
                path.display()
            )
        });
        serde_json::from_str(&text).expect("hash-vectors.json is valid JSON")
    }

    /// Splits a vector's source into the macro's two inputs, as the compiler would.
    fn macro_input(source: &str) -> (proc_macro2::TokenStream, ItemTrait) {
        let mut item: ItemTrait = syn::parse_str(source).expect("vector parses as a trait");
        let position = item
            .attrs
            .iter()
            .position(is_interface_attribute)
            .expect("vector has the attribute");
        let attr = item.attrs.remove(position);
        let syn::Meta::List(list) = attr.meta else {
            panic!("attribute has arguments")
        };
        (list.tokens, item)
    }

    fn hash_in(text: &str, marker: &str) -> Option<u64> {
        let start = text.find(marker)? + marker.len();
        let digits: String = text[start..]
            .trim_start()
            .trim_start_matches("0x")
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        u64::from_str_radix(&digits, 16).ok()
    }

    #[test]
    fn macro_hash_and_schema_equal_python_stubs_for_every_vector() {
        let mut rejected_for_wire = Vec::new();
        for vector in vectors() {
            let expected = u64::from_str_radix(vector.hash.trim_start_matches("0x"), 16)
                .expect("vector hash is hex");
            let (attr, item) = macro_input(&vector.source);
            let macro_spec = analyze(attr.clone(), &item)
                .unwrap_or_else(|error| panic!("{}: {error}", vector.trait_name));
            assert_eq!(macro_spec.hash, expected, "{}", vector.trait_name);
            let expanded = expand(
                attr,
                quote::quote!(#item),
                CoreRoot::FidiusCore,
                Some(&vector.source),
            )
            .to_string();
            let const_name = format!("{}_INTERFACE_HASH : u64 =", vector.trait_name);
            // `python-stub` refuses exactly the traits the macro refuses (one shared check).
            let stub = render_stub(
                &find_interface(&vector.source, &vector.trait_name).expect("stub reads it"),
            );
            match (hash_in(&expanded, &const_name), stub) {
                (Some(emitted), Ok(stub)) => {
                    assert_eq!(emitted, expected, "{}", vector.trait_name);
                    assert_eq!(
                        hash_in(&stub, "__interface_hash__ ="),
                        Some(expected),
                        "{}",
                        vector.trait_name
                    );
                    // The macro's schema fingerprint is the stub's, for the same source.
                    let stub_schema = hash_in(&stub, "__interface_schema__ =");
                    assert!(stub_schema.is_some(), "{}: {stub}", vector.trait_name);
                    let schema = hash_in(
                        &expanded,
                        "schema_fingerprint : :: core :: option :: Option :: Some (",
                    );
                    assert_eq!(schema, stub_schema, "{}", vector.trait_name);
                }
                (None, Err(_)) => {
                    assert!(
                        expanded.contains("compile_error"),
                        "{}: {expanded}",
                        vector.trait_name
                    );
                    rejected_for_wire.push(vector.trait_name.trim_end_matches("Messy").to_owned());
                }
                (macro_hash, stub) => panic!(
                    "{}: the macro {} but python-stub {}",
                    vector.trait_name,
                    if macro_hash.is_some() {
                        "accepts it"
                    } else {
                        "refuses it"
                    },
                    if stub.is_ok() {
                        "accepts it"
                    } else {
                        "refuses it"
                    },
                ),
            }
        }
        rejected_for_wire.dedup();
        assert_eq!(
            rejected_for_wire,
            ["StaticStr", "MutSlice", "FnPointer", "DynBox"]
        );
    }
}
