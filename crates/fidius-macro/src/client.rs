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

/// What the sync and the async client's functions for one method share.
struct Parts<'a> {
    /// The function's name (the method's).
    name: syn::Ident,
    index: Literal,
    docs: Vec<&'a syn::Attribute>,
    /// `name: Type, ...` (`argN` for unnamed arguments).
    params: TokenStream,
    /// A raw method's input, as `&[u8]`.
    raw_input: TokenStream,
    /// A typed method's arguments, as the tuple encoded as the JSON array (`&[(); 0]` for none).
    json_args: TokenStream,
    /// The type a successful call returns; `None` for `()` (the result is decoded as `IgnoredAny`).
    success: Option<TokenStream>,
}

/// The client function's parameter names: the trait's, `argN` for `_`.
fn arg_names(method: &MethodSpec) -> Vec<syn::Ident> {
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

fn parts<'a>(item: &'a ItemTrait, index: usize, method: &MethodSpec) -> Parts<'a> {
    let arg_names = arg_names(method);
    let arg_types = method.args.iter().map(|arg| &arg.ty);
    let raw_input = arg_names
        .first()
        .map(|input| quote!(::core::convert::AsRef::<[u8]>::as_ref(&#input)))
        .unwrap_or_default();
    let json_args = if arg_names.is_empty() {
        quote!(&[(); 0])
    } else {
        quote!(&(#(#arg_names,)*))
    };
    Parts {
        name: format_ident!("{}", method.name),
        index: Literal::usize_unsuffixed(index),
        docs: item_docs(item, &method.name),
        params: quote!(#(#arg_names: #arg_types),*),
        raw_input,
        json_args,
        success: match method.wire {
            WireMode::Raw => Some(quote!(::std::vec::Vec<u8>)),
            WireMode::TypedJson => method.output.as_ref().map(|output| {
                let success = shape::success_type(output);
                quote!(#success)
            }),
        },
    }
}

fn async_client_method(
    item: &ItemTrait,
    index: usize,
    method: &MethodSpec,
    root: &TokenStream,
) -> TokenStream {
    let Parts {
        name,
        index,
        docs,
        params,
        raw_input,
        json_args,
        success,
    } = parts(item, index, method);
    if method.streams_input
        || method
            .output
            .as_ref()
            .and_then(shape::stream_item)
            .is_some()
    {
        // Streaming methods have no async client function: the sync client's returns the
        // handle's stream, which is itself a `futures_core::Stream`.
        return TokenStream::new();
    }
    let method_name = &method.name;
    let optional = method.optional_since.is_some();
    let returns = success.clone().unwrap_or_else(|| quote!(()));
    let body = match (method.wire, success) {
        (WireMode::Raw, _) => quote! {
            #root::call::__private::call_raw_async(
                &self.0, #index, #method_name, #optional, #raw_input.to_vec(),
            )
        },
        (WireMode::TypedJson, Some(success)) => quote! {
            #root::call::__private::call_json_async::<#success, H>(
                &self.0, #index, #method_name, #optional,
                #root::call::__private::encode_arguments(#method_name, #json_args),
            )
        },
        (WireMode::TypedJson, None) => quote! {
            let call = #root::call::__private::call_json_async::<
                #root::call::__private::IgnoredAny, H,
            >(
                &self.0, #index, #method_name, #optional,
                #root::call::__private::encode_arguments(#method_name, #json_args),
            );
            async move { call.await.map(|_| ()) }
        },
    };
    quote! {
        #(#docs)*
        pub fn #name(&self, #params)
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
    let Parts {
        name,
        index,
        docs,
        params,
        raw_input,
        json_args,
        success,
    } = parts(item, index, method);
    let method_name = &method.name;
    let ensure_implemented = method.optional_since.map(
        |_| quote!(#root::call::__private::ensure_implemented(&self.0, #index, #method_name)?;),
    );
    if let Some(position) = method.streamed_argument() {
        let names = arg_names(method);
        let params = method
            .args
            .iter()
            .zip(&names)
            .enumerate()
            .map(|(at, (arg, name))| {
                if at == position {
                    quote!(#name: __FidiusItems)
                } else {
                    let ty = &arg.ty;
                    quote!(#name: #ty)
                }
            });
        let others: Vec<&syn::Ident> = names
            .iter()
            .enumerate()
            .filter(|(at, _)| *at != position)
            .map(|(_, name)| name)
            .collect();
        let others = if others.is_empty() {
            quote!(&[(); 0])
        } else {
            quote!(&(#(#others,)*))
        };
        let items = &names[position];
        let Some(item) = shape::stream_item(&method.args[position].ty) else {
            return TokenStream::new();
        };
        let bounds = quote! {
            H: #root::StreamedArgumentCall,
            __FidiusItems: ::core::iter::IntoIterator<Item = #item>,
            <__FidiusItems as ::core::iter::IntoIterator>::IntoIter: ::core::marker::Send + 'static,
        };
        if let Some(output) = method.output.as_ref().and_then(shape::stream_item) {
            return quote! {
                #(#docs)*
                ///
                /// Bidirectional: `#items` is read lazily by the plugin, one item at a time, and
                /// the result streams (see `StreamedArgumentCall`). The stream holds one instance
                /// of the plugin until it ends or is dropped.
                pub fn #name<__FidiusItems>(&self, #(#params),*)
                    -> ::core::result::Result<<H as #root::StreamingCall>::Items<#output>, #root::CallError>
                where
                    #bounds
                {
                    #ensure_implemented
                    #root::call::__private::call_stream_with_stream_json::<H, #item, #output, __FidiusItems>(
                        &self.0, #index, #method_name, #others, #items,
                    )
                }
            };
        }
        let (returns, decoded, finish) = match success {
            Some(success) => (success.clone(), success, TokenStream::new()),
            None => (
                quote!(()),
                quote!(#root::call::__private::IgnoredAny),
                quote!(.map(|_| ())),
            ),
        };
        return quote! {
            #(#docs)*
            ///
            /// `#items` is read lazily by the plugin, one item at a time (see
            /// `StreamedArgumentCall`).
            pub fn #name<__FidiusItems>(&self, #(#params),*)
                -> ::core::result::Result<#returns, #root::CallError>
            where
                #bounds
            {
                #ensure_implemented
                #root::call::__private::call_with_stream_json::<H, #item, #decoded, __FidiusItems>(
                    &self.0, #index, #method_name, #others, #items,
                )
                #finish
            }
        };
    }
    if let Some(item) = method.output.as_ref().and_then(shape::stream_item) {
        return quote! {
            #(#docs)*
            ///
            /// Streams its result: each item as the plugin yields it (see `StreamingCall`). The
            /// stream holds one instance of the plugin until it ends or is dropped.
            pub fn #name(&self, #params)
                -> ::core::result::Result<<H as #root::StreamingCall>::Items<#item>, #root::CallError>
            where
                H: #root::StreamingCall,
            {
                #ensure_implemented
                #root::call::__private::call_stream_json::<H, #item>(
                    &self.0, #index, #method_name, #json_args,
                )
            }
        };
    }
    let returns = success.clone().unwrap_or_else(|| quote!(()));
    let body = match (method.wire, success) {
        (WireMode::Raw, _) => quote! {
            #root::PluginCall::call_raw(&self.0, #index, #raw_input)
        },
        (WireMode::TypedJson, Some(success)) => quote! {
            #root::call::__private::call_json::<#success>(
                &self.0, #index, #method_name, #json_args,
            )
        },
        (WireMode::TypedJson, None) => quote! {
            #root::call::__private::call_json::<#root::call::__private::IgnoredAny>(
                &self.0, #index, #method_name, #json_args,
            )
            .map(|_| ())
        },
    };
    quote! {
        #(#docs)*
        pub fn #name(&self, #params)
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
