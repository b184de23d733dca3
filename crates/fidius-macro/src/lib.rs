//! `#[plugin_interface]`: turns a Rust trait into a fidius interface contract.
//!
//! This crate only declares the attribute; reading the trait and computing its hash happen in
//! `fidius_core::interface`, the same code `fidius python-stub` runs. Most interface crates depend
//! only on the `fidius` facade and write `use fidius::plugin_interface;`, whose generated code
//! names `::fidius::__private::core`; this crate's own `plugin_interface` names `::fidius_core`,
//! for crates that depend on `fidius-core` and `fidius-macro` directly.
//!
//! ```
//! use fidius_core::PluginError;
//! use fidius_macro::plugin_interface;
//!
//! #[plugin_interface(version = 1)]
//! pub trait Greeter {
//!     /// Greets someone by name.
//!     fn greet(&self, name: String) -> String;
//!     #[wire(raw)]
//!     fn echo(&self, data: Vec<u8>) -> Vec<u8>;
//!     #[optional(since = 2)]
//!     fn farewell(&self, name: String) -> Result<String, PluginError>;
//! }
//!
//! let descriptor = __fidius_Greeter::Greeter_PYTHON_DESCRIPTOR;
//! assert_eq!(descriptor.methods[1].signature, "echo:Vec < u8 >->Vec < u8 >!raw");
//! assert_eq!(descriptor.interface_hash, __fidius_Greeter::Greeter_INTERFACE_HASH);
//! ```
//!
//! generates, beside the trait (with the `#[wire]`/`#[optional]` helper attributes removed):
//! - `mod __fidius_Greeter` holding `Greeter_PYTHON_DESCRIPTOR` (a
//!   `fidius_core::PythonInterfaceDescriptor`) and `Greeter_INTERFACE_HASH: u64`; the descriptor's
//!   schema fingerprint covers the serde structs and enums declared in the trait's own file (the
//!   macro reads that file, as `fidius python-stub` does; on compilers before 1.88, which cannot
//!   say where a trait is, it is `None`);
//! - `struct GreeterClient<H>(pub H)`, whose methods mirror the trait's over any
//!   `H: fidius_core::PluginCall` and return `Result<T, fidius_core::CallError>` (for a method
//!   returning `Result<T, PluginError>`, the plugin's error arrives as `CallError::Plugin`).
#![forbid(unsafe_code)]

mod client;
mod descriptor;
mod expand;
mod plugin_impl;
mod rust_table;

use proc_macro::TokenStream;

/// Marks a trait as a fidius interface. Arguments: `version = N` (required) and, for
/// compatibility with the original fidius, `buffer = ...` (ignored). Method attributes:
/// `#[wire(raw)]` (bytes in, bytes out) and `#[optional(since = N)]`.
#[proc_macro_attribute]
pub fn plugin_interface(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_in_its_file(attr, item, expand::CoreRoot::FidiusCore)
}

/// `#[plugin_interface]` as the `fidius` facade re-exports it (`fidius::plugin_interface`): the
/// same attribute, whose generated code reaches fidius-core through `::fidius`, so an interface
/// crate needs no other fidius dependency. Use it as `fidius::plugin_interface`.
#[proc_macro_attribute]
pub fn plugin_interface_via_facade(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_in_its_file(attr, item, expand::CoreRoot::Facade)
}

/// Makes `impl Trait for Type` a Rust cdylib plugin of `#[plugin_interface]` trait `Trait`: the
/// library exports `fidius_plugin_<Type>` (a `fidius_core::abi::RustPluginDescriptor`) that a
/// fidius host loads like any plugin. `Type` must be `Default + Sync` (the library serves every
/// call from one instance, made on first use). Arguments: the trait's path, then optionally
/// `name = "..."` (the plugin's name; by default the type's). A crate may hold several.
#[proc_macro_attribute]
pub fn plugin_impl(attr: TokenStream, item: TokenStream) -> TokenStream {
    plugin_impl::expand(
        attr.into(),
        item.into(),
        expand::CoreRoot::FidiusCore.path(),
    )
    .into()
}

/// `#[plugin_impl]` as the `fidius` facade re-exports it (`fidius::plugin_impl`).
#[proc_macro_attribute]
pub fn plugin_impl_via_facade(attr: TokenStream, item: TokenStream) -> TokenStream {
    plugin_impl::expand(attr.into(), item.into(), expand::CoreRoot::Facade.path()).into()
}

/// Expands with the text of the trait's own file, where the serde structs of its schema
/// fingerprint are read.
fn expand_in_its_file(attr: TokenStream, item: TokenStream, root: expand::CoreRoot) -> TokenStream {
    let item = item.into();
    let source = expand::declaring_file(&item);
    expand::expand(attr.into(), item, root, source.as_deref()).into()
}
