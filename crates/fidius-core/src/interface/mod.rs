//! The interface contract: a Rust trait marked `#[plugin_interface]`, its canonical signature
//! strings and hash (compatible with the original fidius, see `crates/fidius-core/interop/HASH.md`), and the
//! `const` descriptor a host checks Python plugins against.
//!
//! [`InterfaceSpec::from_trait`] is the one place the hash is computed: the macro calls it at
//! compile time and `fidius python-stub` calls it on the same source, so a generated stub always
//! carries the hash the host expects. [`schema_fingerprint`] adds what the hash leaves out (the
//! fields of the structs the methods use), computed the same way by both.

mod arguments;
mod attr;
mod canonical;
mod descriptor;
mod error;
mod fnv;
mod schema;
pub mod shape;
mod source;
mod spec;
pub mod stub;

pub use arguments::{ArgumentMismatch, ArgumentShapes, JsonShape};
pub use attr::{is_interface_attribute, InterfaceAttr};
pub use canonical::canonical_type;
pub use descriptor::{
    OwnedInterfaceDescriptor, OwnedMethodDescriptor, PythonArgDescriptor,
    PythonInterfaceDescriptor, PythonMethodDescriptor, WireMode,
};
pub use error::{InterfaceError, InterfaceErrors};
pub use schema::schema_fingerprint;
pub use source::{
    find_interface, InterfaceSource, LocatedProblem, Location, SerdeStruct, SourceError,
};
pub use spec::{
    ArgSpec, InterfaceSpec, MethodSpec, METHOD_HELPER_ATTRIBUTES, TRAIT_HELPER_ATTRIBUTES,
};

/// The interface hash of a set of required-method signature strings: FNV-1a 64 over the strings
/// sorted by bytes and joined with `\n`. Order of the input does not matter.
pub fn hash_signatures<'a>(signatures: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut sorted: Vec<&str> = signatures.into_iter().collect();
    sorted.sort_unstable();
    fnv::fnv1a_64(sorted.join("\n").as_bytes())
}
