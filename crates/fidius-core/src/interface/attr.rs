//! The arguments of `#[plugin_interface(version = N, buffer = ...)]`.

use proc_macro2::{Span, TokenStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Lit, MetaNameValue, Token};

use super::error::{InterfaceError, InterfaceErrors};

/// Parsed `#[plugin_interface]` arguments. `buffer` is accepted for compatibility with the
/// original tool and ignored: the buffer strategy means nothing to Python plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAttr {
    /// The interface version written in `version = N`.
    pub version: u32,
}

impl InterfaceAttr {
    /// Parses the tokens inside the attribute's parentheses. `call_site` is where a missing
    /// `version` is reported.
    pub fn parse(args: TokenStream, call_site: Span) -> Result<Self, InterfaceErrors> {
        let pairs = syn::parse::Parser::parse2(
            Punctuated::<MetaNameValue, Token![,]>::parse_terminated,
            args,
        )
        .map_err(|error| InterfaceErrors(vec![error.into()]))?;
        let mut errors = Vec::new();
        let mut version = None;
        let mut buffer_seen = false;
        for pair in &pairs {
            let name = pair
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            let span = pair.path.span();
            match name.as_str() {
                "version" if version.is_some() => {
                    errors.push(InterfaceError::DuplicateArgument { name, span });
                }
                "version" => match version_value(&pair.value) {
                    Some(value) => version = Some(value),
                    None => errors.push(InterfaceError::InvalidArgumentValue {
                        name,
                        expected: "an integer literal that fits in u32",
                        span: pair.value.span(),
                    }),
                },
                "buffer" if buffer_seen => {
                    errors.push(InterfaceError::DuplicateArgument { name, span });
                }
                "buffer" => {
                    buffer_seen = true;
                    if !matches!(pair.value, Expr::Path(_)) {
                        errors.push(InterfaceError::InvalidArgumentValue {
                            name,
                            expected: "a buffer strategy name such as `PluginAllocated`",
                            span: pair.value.span(),
                        });
                    }
                }
                _ => errors.push(InterfaceError::UnknownArgument {
                    name: quote::ToTokens::to_token_stream(&pair.path).to_string(),
                    span,
                }),
            }
        }
        match version {
            Some(version) if errors.is_empty() => Ok(Self { version }),
            None if errors.is_empty() => {
                Err(InterfaceErrors(vec![InterfaceError::MissingVersion {
                    span: call_site,
                }]))
            }
            _ => Err(InterfaceErrors(errors)),
        }
    }

    /// Parses a `#[plugin_interface(...)]` attribute found on a trait in a source file.
    pub fn from_attribute(attr: &syn::Attribute) -> Result<Self, InterfaceErrors> {
        let span = attr.span();
        match &attr.meta {
            syn::Meta::List(list) => Self::parse(list.tokens.clone(), span),
            _ => Err(InterfaceErrors(vec![InterfaceError::MissingVersion {
                span,
            }])),
        }
    }
}

/// True for `#[plugin_interface]`, `#[fidius::plugin_interface]` and
/// `#[fidius_macro::plugin_interface]`.
pub fn is_interface_attribute(attr: &syn::Attribute) -> bool {
    let segments: Vec<String> = attr
        .path()
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect();
    match segments.as_slice() {
        [name] => name == "plugin_interface",
        [krate, name] => {
            name == "plugin_interface" && (krate == "fidius" || krate == "fidius_macro")
        }
        _ => false,
    }
}

fn version_value(value: &Expr) -> Option<u32> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(int), ..
        }) => int.base10_parse().ok(),
        _ => None,
    }
}
