//! Finding an interface trait in a Rust source file, the way `fidius python-stub` needs it.

use std::fmt;

use proc_macro2::Span;
use syn::{Item, ItemTrait};

use super::attr::{is_interface_attribute, InterfaceAttr};
use super::error::InterfaceErrors;
use super::schema::schema_fingerprint;
use super::spec::InterfaceSpec;

/// An interface read from a source file, with the serde structs declared beside it.
#[derive(Debug, Clone)]
pub struct InterfaceSource {
    /// The validated interface.
    pub spec: InterfaceSpec,
    /// Named-field structs in the file that derive `Serialize` or `Deserialize`.
    pub structs: Vec<SerdeStruct>,
}

/// A struct deriving `Serialize`/`Deserialize`, which crosses the wire as a JSON object.
#[derive(Debug, Clone)]
pub struct SerdeStruct {
    /// The struct's name.
    pub name: String,
    /// Fields in declaration order.
    pub fields: Vec<(String, syn::Type)>,
}

/// A position in the source, 1-based like editors show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    fn of(span: Span) -> Self {
        let start = span.start();
        Self {
            line: start.line,
            column: start.column + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// One located problem inside an interface trait.
#[derive(Debug, Clone)]
pub struct LocatedProblem {
    pub location: Location,
    pub message: String,
}

/// Why no interface could be read from a source file.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("the file does not parse as Rust at {location}: {message}")]
    Parse { location: Location, message: String },
    #[error("no trait named `{name}` in the file (traits found: {})", list_or_none(.found))]
    TraitNotFound { name: String, found: Vec<String> },
    #[error("trait `{name}` at {location} has no `#[plugin_interface(...)]` attribute")]
    NotAnInterface { name: String, location: Location },
    #[error("trait `{name}` is not a valid interface:{}", problem_lines(.problems))]
    Invalid {
        name: String,
        problems: Vec<LocatedProblem>,
    },
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn problem_lines(problems: &[LocatedProblem]) -> String {
    problems
        .iter()
        .map(|problem| format!("\n  {}: {}", problem.location, problem.message))
        .collect()
}

/// Parses `source`, finds trait `trait_name` (nested `mod` blocks included) and reads it as an
/// interface, with its [schema fingerprint](schema_fingerprint) over the file's items.
pub fn find_interface(source: &str, trait_name: &str) -> Result<InterfaceSource, SourceError> {
    let file = syn::parse_file(source).map_err(|error| SourceError::Parse {
        location: Location::of(error.span()),
        message: error.to_string(),
    })?;
    let mut traits = Vec::new();
    let mut structs = Vec::new();
    collect(&file.items, &mut traits, &mut structs);
    let Some(item) = traits.iter().find(|item| item.ident == trait_name) else {
        return Err(SourceError::TraitNotFound {
            name: trait_name.to_owned(),
            found: traits.iter().map(|item| item.ident.to_string()).collect(),
        });
    };
    let Some(attr) = item.attrs.iter().find(|attr| is_interface_attribute(attr)) else {
        return Err(SourceError::NotAnInterface {
            name: trait_name.to_owned(),
            location: Location::of(item.ident.span()),
        });
    };
    let invalid = |errors: InterfaceErrors| SourceError::Invalid {
        name: trait_name.to_owned(),
        problems: errors
            .0
            .iter()
            .map(|error| LocatedProblem {
                location: Location::of(error.span()),
                message: error.to_string(),
            })
            .collect(),
    };
    let attr = InterfaceAttr::from_attribute(attr).map_err(invalid)?;
    let mut spec = InterfaceSpec::from_trait(item, &attr).map_err(invalid)?;
    spec.schema_fingerprint = Some(schema_fingerprint(&spec, &file.items));
    Ok(InterfaceSource { spec, structs })
}

fn collect<'a>(items: &'a [Item], traits: &mut Vec<&'a ItemTrait>, structs: &mut Vec<SerdeStruct>) {
    for item in items {
        match item {
            Item::Trait(item) => traits.push(item),
            Item::Mod(module) => {
                if let Some((_, inner)) = &module.content {
                    collect(inner, traits, structs);
                }
            }
            Item::Struct(item) if derives_serde(&item.attrs) => {
                if let syn::Fields::Named(named) = &item.fields {
                    structs.push(SerdeStruct {
                        name: item.ident.to_string(),
                        fields: named
                            .named
                            .iter()
                            .filter_map(|field| {
                                let name = syn::ext::IdentExt::unraw(field.ident.as_ref()?);
                                Some((name.to_string(), field.ty.clone()))
                            })
                            .collect(),
                    });
                }
            }
            _ => {}
        }
    }
}

pub(super) fn derives_serde(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .filter(|attr| attr.path().is_ident("derive"))
        .any(|attr| {
            let mut found = false;
            // A derive list that fails to parse just isn't serde; the compiler reports it.
            let _ = attr.parse_nested_meta(|meta| {
                let last = meta
                    .path
                    .segments
                    .last()
                    .map(|segment| segment.ident.to_string());
                found |= matches!(last.as_deref(), Some("Serialize" | "Deserialize"));
                Ok(())
            });
            found
        })
}
