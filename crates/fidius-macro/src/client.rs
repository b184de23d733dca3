//! `<Trait>Client<H>`: the trait's methods over any `H: fidius_core::PluginCall`.
//!
//! The client is a tuple struct so that no helper method can collide with an interface method.

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
    quote! {
        #[doc = #doc]
        #[derive(Debug, Clone)]
        #vis struct #client<H>(pub H);

        impl<H: #root::PluginCall> #client<H> {
            #(#methods)*
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
    let arg_names: Vec<syn::Ident> = method
        .args
        .iter()
        .enumerate()
        .map(|(position, arg)| match &arg.name {
            Some(arg_name) => format_ident!("{}", arg_name),
            None => format_ident!("arg{}", position),
        })
        .collect();
    let arg_types = method.args.iter().map(|arg| &arg.ty);
    let ensure_implemented = method.optional_since.map(
        |_| quote!(#root::call::__private::ensure_implemented(&self.0, #index, #method_name)?;),
    );
    if method.streams_input {
        // A streamed argument is passed through the handle's `call_stream_*` methods; the typed
        // client has no method for it yet.
        return TokenStream::new();
    }
    if let Some(item) = method.output.as_ref().and_then(shape::stream_item) {
        let args = if arg_names.is_empty() {
            quote!(&[(); 0])
        } else {
            quote!(&(#(#arg_names,)*))
        };
        return quote! {
            #(#docs)*
            ///
            /// Streams its result: each item as the plugin yields it (see `StreamingCall`). The
            /// stream holds one instance of the plugin until it ends or is dropped.
            pub fn #name(&self, #(#arg_names: #arg_types),*)
                -> ::core::result::Result<<H as #root::StreamingCall>::Items<#item>, #root::CallError>
            where
                H: #root::StreamingCall,
            {
                #ensure_implemented
                #root::call::__private::call_stream_json::<H, #item>(
                    &self.0, #index, #method_name, #args,
                )
            }
        };
    }
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
