//! `#[plugin_impl(Trait)]` on `impl Trait for Type`: exports the plugin's
//! `fidius_core::abi::RustPluginDescriptor` as `fidius_plugin_<Type>` from a cdylib.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::{ImplItem, ItemImpl, LitStr, Path, Token};

use crate::rust_table;

/// `Trait` or `path::to::Trait`, then optionally `, name = "plugin-name"`.
struct ImplAttr {
    interface: Path,
    name: Option<LitStr>,
}

impl Parse for ImplAttr {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let interface: Path = input.parse()?;
        let mut name = None;
        while input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: syn::Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            if key == "name" {
                name = Some(input.parse()?);
            } else {
                return Err(syn::Error::new(
                    key.span(),
                    "unknown argument: `#[plugin_impl(Trait)]` or `#[plugin_impl(Trait, name = \"...\")]`",
                ));
            }
        }
        Ok(Self { interface, name })
    }
}

pub fn expand(attr: TokenStream, item: TokenStream, root: TokenStream) -> TokenStream {
    match try_expand(attr, item.clone(), &root) {
        Ok(tokens) => tokens,
        Err(error) => {
            let error = error.into_compile_error();
            quote!(#item #error)
        }
    }
}

fn try_expand(
    attr: TokenStream,
    item: TokenStream,
    root: &TokenStream,
) -> syn::Result<TokenStream> {
    let attr: ImplAttr = syn::parse2(attr)?;
    let block: ItemImpl = syn::parse2(item)?;
    if block.trait_.is_none() {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[plugin_impl] goes on `impl Trait for Type`",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.generics,
            "a plugin type cannot be generic: the library exports one instance of it",
        ));
    }
    let self_ty = &block.self_ty;
    let type_ident = match &**self_ty {
        syn::Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .map(|segment| segment.ident.clone()),
        _ => None,
    }
    .ok_or_else(|| syn::Error::new_spanned(self_ty, "the plugin type must be a named type"))?;
    let trait_segment = attr
        .interface
        .segments
        .last()
        .ok_or_else(|| syn::Error::new_spanned(&attr.interface, "name the interface trait"))?;
    let module_path = |module: syn::Ident| {
        let mut path = attr.interface.clone();
        if let Some(last) = path.segments.last_mut() {
            *last = module.into();
        }
        path
    };
    let descriptor_module = module_path(format_ident!("__fidius_{}", trait_segment.ident));
    let descriptor = format_ident!("{}_PYTHON_DESCRIPTOR", trait_segment.ident);
    let table_type = module_path(rust_table::table_ident(&trait_segment.ident));
    let defined: Vec<String> = block
        .items
        .iter()
        .filter_map(|item| match item {
            ImplItem::Fn(function) => Some(function.sig.ident.to_string()),
            _ => None,
        })
        .collect();
    let plugin_name = attr
        .name
        .map_or_else(|| type_ident.to_string(), |name| name.value());
    let symbol = format!("{}{}", fidius_core::abi::SYMBOL_PREFIX, type_ident);
    let abi = quote!(#root::abi);
    Ok(quote! {
        #block

        impl #abi::RustPlugin for #self_ty {
            fn instance() -> &'static Self {
                static INSTANCE: ::std::sync::OnceLock<#self_ty> = ::std::sync::OnceLock::new();
                INSTANCE.get_or_init(<#self_ty as ::core::default::Default>::default)
            }
        }

        const _: () = {
            static METHODS: [::core::option::Option<#abi::MethodFn>; #table_type::METHOD_COUNT] =
                #table_type::methods::<#self_ty>(&[#(#defined),*]);

            #[unsafe(export_name = #symbol)]
            static DESCRIPTOR: #abi::RustPluginDescriptor = #abi::RustPluginDescriptor::new(
                &#descriptor_module::#descriptor,
                #plugin_name,
                ::core::env!("CARGO_PKG_VERSION"),
                &METHODS,
            );
        };
    })
}
