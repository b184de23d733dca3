//! `struct __fidius_rust_<Trait>`: the `extern "C"` entries a Rust cdylib plugin of the trait exports
//! (see `fidius_core::abi`), generic over the plugin type, and the `const fn` that builds a plugin's
//! method table from them, as associated items. `#[plugin_impl]` instantiates it for one type. A
//! type rather than a module, so that it sees the trait wherever the trait is declared (a module
//! inside a function body, a doctest's, could not name it: `super` skips the function).
//!
//! Every serde requirement is a bound on the plugin type (`T: Codec<Args, Value>`), so this
//! generates no error in an interface crate whose types only serialise one way: a Rust plugin of
//! such an interface fails to compile where `#[plugin_impl]` names its type.

use fidius_core::interface::{shape, InterfaceSpec, MethodSpec, WireMode};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::visit::Visit;
use syn::{ItemTrait, Type};

/// The type's name, e.g. `__fidius_rust_Greeter`.
pub fn table_ident(trait_ident: &syn::Ident) -> syn::Ident {
    format_ident!("__fidius_rust_{}", trait_ident)
}

pub fn generate(item: &ItemTrait, spec: &InterfaceSpec, root: &TokenStream) -> TokenStream {
    let vis = &item.vis;
    let trait_ident = &item.ident;
    let table = table_ident(trait_ident);
    let count = spec.methods.len();
    let abi = quote!(#root::abi);
    let mut shims = Vec::new();
    let mut entries = Vec::new();
    let mut bounds = Vec::new();
    for method in &spec.methods {
        let shim = format_ident!("__shim_{}", method.name);
        let name = &method.name;
        match entry(method, trait_ident, root) {
            Some(Entry { bound, body }) => {
                bounds.extend(bound.clone());
                let bound = bound.iter();
                shims.push(quote! {
                    extern "C" fn #shim<T>(
                        input: #abi::CallInput<'_>,
                        output: &mut #abi::CallOutput,
                    ) -> u32
                    where
                        T: #trait_ident + #abi::RustPlugin #(+ #bound)*,
                    {
                        #body
                    }
                });
                let pointer =
                    quote!(::core::option::Option::Some(Self::#shim::<T> as #abi::MethodFn));
                entries.push(if method.optional_since.is_some() {
                    quote! {
                        if #abi::__private::contains(defined, #name) {
                            #pointer
                        } else {
                            ::core::option::Option::None
                        }
                    }
                } else {
                    pointer
                });
            }
            // Types a Rust plugin cannot receive (references nested in other types): no entry,
            // and a host refuses a plugin without a required one by name.
            None => entries.push(quote!(::core::option::Option::None)),
        }
    }
    quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #table;

        #[allow(non_snake_case, dead_code)]
        impl #table {
            /// How many methods the interface has: the length of a plugin's method table.
            pub const METHOD_COUNT: usize = #count;

            /// The method table of plugin type `T`, whose impl block defines the methods named in
            /// `defined` (an `#[optional]` method it leaves out gets no entry).
            pub const fn methods<T>(defined: &[&str]) -> [::core::option::Option<#abi::MethodFn>; #count]
            where
                T: #trait_ident + #abi::RustPlugin #(+ #bounds)*,
            {
                [#(#entries),*]
            }

            #(#shims)*
        }
    }
}

struct Entry {
    /// The `Codec<Args, Value>` bound of a typed method.
    bound: Option<TokenStream>,
    body: TokenStream,
}

fn entry(method: &MethodSpec, trait_ident: &syn::Ident, root: &TokenStream) -> Option<Entry> {
    let abi = quote!(#root::abi);
    let name = &method.name;
    let method_ident = format_ident!("{}", method.name);
    let call = |args: TokenStream| quote!(<T as #trait_ident>::#method_ident(<T as #abi::RustPlugin>::instance(), #args));
    let fallible = method
        .output
        .as_ref()
        .is_some_and(|output| shape::result_parts(output).is_some());
    // `Ok(value)`, or the method's own `Result<_, PluginError>`.
    let wrap = |value: TokenStream| {
        if fallible {
            value
        } else if method.output.is_some() {
            quote!(::core::result::Result::Ok(#value))
        } else {
            quote!({ #value; ::core::result::Result::Ok(()) })
        }
    };
    match method.wire {
        WireMode::Raw => {
            let arg = &method.args.first()?.ty;
            let bytes = if shape::is_byte_slice_ref(arg) {
                quote!(bytes)
            } else {
                quote!(bytes.to_vec())
            };
            let result = wrap(call(bytes));
            Some(Entry {
                bound: None,
                body: quote!(#abi::__private::serve_raw(#name, input, output, |bytes: &[u8]| #result)),
            })
        }
        WireMode::TypedJson => {
            let mut decoded = Vec::new();
            let mut passed = Vec::new();
            let mut bindings = Vec::new();
            for (position, arg) in method.args.iter().enumerate() {
                let binding = format_ident!("arg{}", position);
                match &arg.ty {
                    // A borrowed argument decodes into a box and is lent to the method.
                    Type::Reference(reference) if reference.mutability.is_none() => {
                        if has_reference(&reference.elem) {
                            return None;
                        }
                        let inner = &reference.elem;
                        decoded.push(quote!(::std::boxed::Box<#inner>));
                        passed.push(quote!(&*#binding));
                    }
                    ty => {
                        if has_reference(ty) {
                            return None;
                        }
                        decoded.push(quote!(#ty));
                        passed.push(quote!(#binding));
                    }
                }
                bindings.push(binding);
            }
            let args_type = if decoded.is_empty() {
                quote!([(); 0])
            } else {
                quote!((#(#decoded,)*))
            };
            let pattern = if bindings.is_empty() {
                quote!(_)
            } else {
                quote!((#(#bindings,)*))
            };
            let value = match &method.output {
                Some(output) => {
                    let success = shape::success_type(output);
                    quote!(#success)
                }
                None => quote!(()),
            };
            let result = wrap(call(quote!(#(#passed),*)));
            Some(Entry {
                bound: Some(quote!(#abi::__private::Codec<#args_type, #value>)),
                body: quote! {
                    #abi::__private::serve_typed::<T, #args_type, #value>(
                        #name, input, output, |#pattern| #result,
                    )
                },
            })
        }
    }
}

/// Whether `ty` mentions a reference or a lifetime anywhere (which a bound cannot name elided).
fn has_reference(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_reference(&mut self, _: &'ast syn::TypeReference) {
            self.0 = true;
        }
        fn visit_lifetime(&mut self, _: &'ast syn::Lifetime) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}
