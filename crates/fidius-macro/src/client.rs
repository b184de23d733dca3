//! `<Trait>Client<H>`: the trait's methods over any `H: fidius_core::PluginCall`.
//!
//! `<Trait>AsyncClient<H>`: the same methods, returning futures, over any
//! `H: fidius_core::AsyncPluginCall`.
//!
//! The clients are tuple structs so that no helper method can collide with an interface method.

use fidius_core::interface::{shape, InterfaceSpec, MethodSpec, WireMode};
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};
use syn::ItemTrait;

pub fn generate(item: &ItemTrait, spec: &InterfaceSpec, root: &TokenStream) -> TokenStream {
    let vis = &item.vis;
    let client = format_ident!("{}Client", item.ident);
    let trait_ident = &item.ident;
    let methods = spec
        .methods
        .iter()
        .enumerate()
        .map(|(index, method)| client_method(item, index, method, root));
    let doc = format!(
        "Typed calls into a Python plugin implementing [`{trait_ident}`], over any handle that \
         implements `PluginCall` (`fidius::PluginCall`, or `fidius_core::PluginCall`). Wrap a handle with `{client}(handle)`."
    );
    let async_client = format_ident!("{}AsyncClient", item.ident);
    let async_methods = spec
        .methods
        .iter()
        .enumerate()
        .map(|(index, method)| async_client_method(item, index, method, root));
    let async_doc = format!(
        "Typed async calls into a Python plugin implementing [`{trait_ident}`]: the methods of \
         `{client}`, each returning a future (runtime-agnostic; it owns what it needs, so it is \
         `Send + 'static`), over any handle that implements `AsyncPluginCall`. The arguments \
         are encoded when the method is called. Wrap a handle with `{async_client}(handle)`."
    );
    quote! {
        #[doc = #doc]
        #[derive(Debug, Clone)]
        #vis struct #client<H>(pub H);

        impl<H: #root::PluginCall> #client<H> {
            #(#methods)*
        }

        #[doc = #async_doc]
        #[derive(Debug, Clone)]
        #vis struct #async_client<H>(pub H);

        impl<H: #root::AsyncPluginCall> #async_client<H> {
            #(#async_methods)*
        }
    }
}

/// The argument names of `method`'s client functions (`argN` for unnamed ones).
fn argument_names(method: &MethodSpec) -> Vec<syn::Ident> {
    method
        .args
        .iter()
        .enumerate()
        .map(|(position, arg)| match &arg.name {
            Some(arg_name) => format_ident!("{}", arg_name),
            None => format_ident!("arg{}", position),
        })
        .collect()
}

fn async_client_method(
    item: &ItemTrait,
    index: usize,
    method: &MethodSpec,
    root: &TokenStream,
) -> TokenStream {
    let name = format_ident!("{}", method.name);
    let method_name = &method.name;
    let index = Literal::usize_unsuffixed(index);
    let docs = item_docs(item, &method.name);
    let arg_names = argument_names(method);
    let arg_types = method.args.iter().map(|arg| &arg.ty);
    let optional = method.optional_since.is_some();
    let (returns, body) = match method.wire {
        WireMode::Raw => {
            let input = &arg_names[0];
            (
                quote!(::std::vec::Vec<u8>),
                quote! {
                    #root::call::__private::call_raw_async(
                        &self.0,
                        #index,
                        #method_name,
                        #optional,
                        ::core::convert::AsRef::<[u8]>::as_ref(&#input).to_vec(),
                    )
                },
            )
        }
        WireMode::TypedJson => {
            let args = if arg_names.is_empty() {
                quote!(&[(); 0])
            } else {
                quote!(&(#(#arg_names,)*))
            };
            let call = |decoded: TokenStream| {
                quote! {
                    #root::call::__private::call_json_async::<#decoded, H>(
                        &self.0, #index, #method_name, #optional, #args,
                    )
                }
            };
            match &method.output {
                Some(output) => {
                    let success = shape::success_type(output);
                    (quote!(#success), call(quote!(#success)))
                }
                None => {
                    let ignored = call(quote!(#root::call::__private::IgnoredAny));
                    (
                        quote!(()),
                        quote! {
                            let call = #ignored;
                            async move { call.await.map(|_| ()) }
                        },
                    )
                }
            }
        }
    };
    quote! {
        #(#docs)*
        pub fn #name(&self, #(#arg_names: #arg_types),*)
            -> impl ::core::future::Future<
                Output = ::core::result::Result<#returns, #root::CallError>,
            > + ::core::marker::Send + 'static
        {
            #body
        }
    }
}

fn client_method(
    item: &ItemTrait,
    index: usize,
    method: &MethodSpec,
    root: &TokenStream,
) -> TokenStream {
    let name = format_ident!("{}", method.name);
    let method_name = &method.name;
    let index = Literal::usize_unsuffixed(index);
    let docs = item_docs(item, &method.name);
    let arg_names = argument_names(method);
    let arg_types = method.args.iter().map(|arg| &arg.ty);
    let ensure_implemented = method.optional_since.map(
        |_| quote!(#root::call::__private::ensure_implemented(&self.0, #index, #method_name)?;),
    );
    let (returns, body) = match method.wire {
        WireMode::Raw => {
            let input = &arg_names[0];
            (
                quote!(::std::vec::Vec<u8>),
                quote! {
                    #root::PluginCall::call_raw(
                        &self.0,
                        #index,
                        ::core::convert::AsRef::<[u8]>::as_ref(&#input),
                    )
                },
            )
        }
        WireMode::TypedJson => {
            let args = if arg_names.is_empty() {
                quote!(&[(); 0])
            } else {
                quote!(&(#(#arg_names,)*))
            };
            let call = |decoded: TokenStream| {
                quote! {
                    #root::call::__private::call_json::<#decoded>(
                        &self.0, #index, #method_name, #args,
                    )
                }
            };
            match &method.output {
                Some(output) => {
                    let success = shape::success_type(output);
                    (quote!(#success), call(quote!(#success)))
                }
                None => {
                    let ignored = call(quote!(#root::call::__private::IgnoredAny));
                    (quote!(()), quote!(#ignored.map(|_| ())))
                }
            }
        }
    };
    quote! {
        #(#docs)*
        pub fn #name(&self, #(#arg_names: #arg_types),*)
            -> ::core::result::Result<#returns, #root::CallError>
        {
            #ensure_implemented
            #body
        }
    }
}

/// The trait method's own `#[doc]` attributes, so the client documents itself.
fn item_docs<'a>(item: &'a ItemTrait, method: &str) -> Vec<&'a syn::Attribute> {
    item.items
        .iter()
        .find_map(|trait_item| match trait_item {
            syn::TraitItem::Fn(function) if function.sig.ident == method => Some(
                function
                    .attrs
                    .iter()
                    .filter(|attr| attr.path().is_ident("doc"))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}
