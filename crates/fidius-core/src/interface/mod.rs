//! The interface contract: a Rust trait marked `#[plugin_interface]`, its canonical signature
//! strings and hash (compatible with the original fidius, see `crates/fidius-core/interop/HASH.md`), and the
//! `const` descriptor a host checks Python plugins against.
//!
//! `InterfaceSpec::from_trait` (feature `rust-source`) is the one place signatures are read from a
//! trait, and [`hash_signatures`] the one place they are hashed: the macro calls it at compile time
//! and `fidius python-stub` calls it on the same source, so a generated stub always carries the
//! hash the host expects. Hosts need neither: they compare the hash a descriptor carries.
//! `schema_fingerprint` (feature `rust-source`) adds what the hash leaves out (the fields of the
//! structs the methods use), computed the same way by both.

mod arguments;
mod descriptor;
mod fnv;

pub use arguments::{ArgumentMismatch, ArgumentShapes, JsonShape};
pub use descriptor::{
    OwnedInterfaceDescriptor, OwnedMethodDescriptor, PythonArgDescriptor,
    PythonInterfaceDescriptor, PythonMethodDescriptor, WireMode,
};

// Reading traits from Rust source (feature `rust-source`): the macro and the CLI. Everything above
// works on the canonical strings a descriptor carries, so hosts and workers build without syn.
#[cfg(feature = "rust-source")]
mod attr;
#[cfg(feature = "rust-source")]
mod canonical;
#[cfg(feature = "rust-source")]
mod error;
#[cfg(feature = "rust-source")]
mod schema;
#[cfg(feature = "rust-source")]
pub mod shape;
#[cfg(feature = "rust-source")]
mod source;
#[cfg(feature = "rust-source")]
mod spec;
#[cfg(feature = "rust-source")]
pub mod stub;
#[cfg(feature = "rust-source")]
mod wire;

#[cfg(feature = "rust-source")]
pub use attr::{is_interface_attribute, InterfaceAttr};
#[cfg(feature = "rust-source")]
pub use canonical::canonical_type;
#[cfg(feature = "rust-source")]
pub use error::{InterfaceError, InterfaceErrors};
#[cfg(feature = "rust-source")]
pub use schema::schema_fingerprint;
#[cfg(feature = "rust-source")]
pub use source::{
    find_interface, InterfaceSource, LocatedProblem, Location, SerdeStruct, SourceError,
};
#[cfg(feature = "rust-source")]
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
