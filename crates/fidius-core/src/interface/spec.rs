//! A `#[plugin_interface]` trait read from its syntax tree: methods, canonical signatures and the
//! interface hash. The macro and `python-stub` both build this, so they cannot disagree.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, ItemTrait, Pat, ReturnType, TraitItem, TraitItemFn, Type};

use super::attr::InterfaceAttr;
use super::canonical::canonical_type;
use super::descriptor::{OwnedInterfaceDescriptor, OwnedMethodDescriptor, WireMode};
use super::error::{InterfaceError, InterfaceErrors};
use super::{hash_signatures, shape};

/// Method attributes that belong to fidius and must be removed before the trait is compiled.
pub const METHOD_HELPER_ATTRIBUTES: &[&str] = &["wire", "optional", "method_meta"];
/// Trait attributes that belong to fidius (accepted for the original tool's sake, ignored).
pub const TRAIT_HELPER_ATTRIBUTES: &[&str] = &["trait_meta"];

/// A validated interface trait.
#[derive(Debug, Clone)]
pub struct InterfaceSpec {
    /// The trait's name.
    pub trait_name: String,
    /// `version = N`.
    pub version: u32,
    /// The trait's doc comment lines.
    pub docs: Vec<String>,
    /// Methods in declaration order.
    pub methods: Vec<MethodSpec>,
    /// FNV-1a 64 of the sorted signatures of the required methods.
    pub hash: u64,
    /// The [`schema_fingerprint`](super::schema_fingerprint) of the structs the methods use;
    /// `None` until someone who has the declaring file's items computes it ([`find_interface`](super::find_interface)
    /// and the macro do), since the trait alone does not show them.
    pub schema_fingerprint: Option<u64>,
}

/// One method of an interface trait.
#[derive(Debug, Clone)]
pub struct MethodSpec {
    /// The method's name.
    pub name: String,
    /// Where the name is, for error messages.
    pub span: Span,
    /// `#[wire(raw)]` or typed JSON.
    pub wire: WireMode,
    /// Arguments after the receiver.
    pub args: Vec<ArgSpec>,
    /// The declared return type; `None` when there is no `->`.
    pub output: Option<Type>,
    /// `Some(N)` for `#[optional(since = N)]`.
    pub optional_since: Option<u32>,
    /// Doc comment lines, without the leading space rustdoc adds.
    pub docs: Vec<String>,
    /// The canonical signature string (`name:args->ret` plus markers).
    pub signature: String,
    /// The canonical return type as it enters the signature (`""` without `->`).
    pub output_canonical: String,
    /// The return type is `Stream<T>` (the original's `!stream`).
    pub streams_output: bool,
    /// An argument is `Stream<T>` (the original's `<stream`).
    pub streams_input: bool,
}

/// One method argument.
#[derive(Debug, Clone)]
pub struct ArgSpec {
    /// The argument's name, `None` for `_`.
    pub name: Option<String>,
    /// The declared type.
    pub ty: Type,
    /// The canonical type as it enters the signature.
    pub canonical: String,
}

impl InterfaceSpec {
    /// Reads `item` as an interface. Reports every problem found, not just the first.
    pub fn from_trait(item: &ItemTrait, attr: &InterfaceAttr) -> Result<Self, InterfaceErrors> {
        let mut errors = Vec::new();
        let mut methods = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(method) => match MethodSpec::from_method(method) {
                    Ok(spec) => methods.push(spec),
                    Err(mut method_errors) => errors.append(&mut method_errors),
                },
                other => errors.push(InterfaceError::UnsupportedItem { span: other.span() }),
            }
        }
        if !errors.is_empty() {
            return Err(InterfaceErrors(errors));
        }
        let hash = hash_signatures(
            methods
                .iter()
                .filter(|method| method.optional_since.is_none())
                .map(|method| method.signature.as_str()),
        );
        Ok(Self {
            trait_name: item.ident.to_string(),
            version: attr.version,
            docs: doc_lines(&item.attrs),
            methods,
            hash,
            schema_fingerprint: None,
        })
    }
}

impl MethodSpec {
    /// The index in `args` of the `Stream<T>` argument, if one is (at most one is accepted).
    pub fn streamed_argument(&self) -> Option<usize> {
        self.args
            .iter()
            .position(|arg| shape::stream_item(&arg.ty).is_some())
    }

    fn from_method(method: &TraitItemFn) -> Result<Self, Vec<InterfaceError>> {
        let sig = &method.sig;
        let name = sig.ident.to_string();
        let mut errors = Vec::new();
        if name.starts_with("r#") {
            errors.push(InterfaceError::RawIdentifierMethod {
                method: name.clone(),
                span: sig.ident.span(),
            });
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            errors.push(InterfaceError::GenericMethod {
                method: name.clone(),
                span: sig.generics.span(),
            });
        }
        if let Some(variadic) = &sig.variadic {
            errors.push(InterfaceError::Variadic {
                method: name.clone(),
                span: variadic.span(),
            });
        }
        let attrs = MethodAttrs::parse(&method.attrs, &name, &mut errors);
        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            Some(FnArg::Receiver(receiver))
                if receiver
                    .reference
                    .as_ref()
                    .is_some_and(|(_, lifetime)| lifetime.is_none())
                    && receiver.mutability.is_none()
                    && receiver.colon_token.is_none() => {}
            Some(FnArg::Receiver(receiver)) => errors.push(InterfaceError::InvalidReceiver {
                method: name.clone(),
                span: receiver.span(),
            }),
            _ => errors.push(InterfaceError::InvalidReceiver {
                method: name.clone(),
                span: sig.paren_token.span.join(),
            }),
        }
        let mut args = Vec::new();
        let mut streams_input = false;
        for input in inputs {
            let FnArg::Typed(typed) = input else { continue };
            let arg_name = match &*typed.pat {
                Pat::Ident(ident) if ident.subpat.is_none() && ident.by_ref.is_none() => {
                    Some(syn::ext::IdentExt::unraw(&ident.ident).to_string())
                }
                Pat::Wild(_) => None,
                other => {
                    errors.push(InterfaceError::UnsupportedPattern {
                        method: name.clone(),
                        span: other.span(),
                    });
                    None
                }
            };
            let hashed = shape::stream_item(&typed.ty).inspect(|_| streams_input = true);
            args.push(ArgSpec {
                name: arg_name,
                ty: (*typed.ty).clone(),
                canonical: canonical_type(hashed.unwrap_or(&typed.ty)),
            });
        }
        let output = match &sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some((**ty).clone()),
        };
        let stream_output = output.as_ref().and_then(shape::stream_item);
        let output_canonical = stream_output
            .or(output.as_ref())
            .map(canonical_type)
            .unwrap_or_default();
        if attrs.wire == WireMode::Raw && !is_raw_shape(&args, output.as_ref()) {
            errors.push(InterfaceError::RawSignature {
                method: name.clone(),
                span: sig.span(),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let streams_output = stream_output.is_some();
        let signature = signature_string(
            &name,
            &args,
            &output_canonical,
            attrs.wire,
            streams_output,
            streams_input,
        );
        Ok(Self {
            span: sig.ident.span(),
            name,
            wire: attrs.wire,
            args,
            output,
            optional_since: attrs.optional_since,
            docs: doc_lines(&method.attrs),
            signature,
            output_canonical,
            streams_output,
            streams_input,
        })
    }
}

/// `name:arg1,arg2->ret` then the markers, in the original's order: `!raw`, `!stream`, `<stream`.
fn signature_string(
    name: &str,
    args: &[ArgSpec],
    output: &str,
    wire: WireMode,
    streams_output: bool,
    streams_input: bool,
) -> String {
    let arg_types: Vec<&str> = args.iter().map(|arg| arg.canonical.as_str()).collect();
    let mut signature = format!("{name}:{}->{output}", arg_types.join(","));
    if wire == WireMode::Raw {
        signature.push_str("!raw");
    }
    if streams_output {
        signature.push_str("!stream");
    }
    if streams_input {
        signature.push_str("<stream");
    }
    signature
}

fn is_raw_shape(args: &[ArgSpec], output: Option<&Type>) -> bool {
    let takes_bytes =
        matches!(args, [arg] if shape::is_byte_vec(&arg.ty) || shape::is_byte_slice_ref(&arg.ty));
    takes_bytes && output.is_some_and(|ty| shape::is_byte_vec(shape::success_type(ty)))
}

struct MethodAttrs {
    wire: WireMode,
    optional_since: Option<u32>,
}

impl MethodAttrs {
    fn parse(attrs: &[Attribute], method: &str, errors: &mut Vec<InterfaceError>) -> Self {
        let mut wire = None;
        let mut optional_since = None;
        for attr in attrs {
            if attr.path().is_ident("wire") {
                if wire.is_some() {
                    errors.push(duplicate("wire", method, attr));
                }
                wire = Some(parse_wire(attr).unwrap_or_else(|error| {
                    errors.push(error);
                    WireMode::TypedJson
                }));
            } else if attr.path().is_ident("optional") {
                if optional_since.is_some() {
                    errors.push(duplicate("optional", method, attr));
                }
                match parse_optional(attr) {
                    Some(since) => optional_since = Some(since),
                    None => errors.push(InterfaceError::InvalidOptional { span: attr.span() }),
                }
            }
        }
        Self {
            wire: wire.unwrap_or(WireMode::TypedJson),
            optional_since,
        }
    }
}

fn duplicate(name: &'static str, method: &str, attr: &Attribute) -> InterfaceError {
    InterfaceError::DuplicateMethodAttribute {
        name,
        method: method.to_owned(),
        span: attr.span(),
    }
}

fn parse_wire(attr: &Attribute) -> Result<WireMode, InterfaceError> {
    let mode: syn::Ident = attr.parse_args()?;
    match mode.to_string().as_str() {
        "raw" => Ok(WireMode::Raw),
        "json" => Ok(WireMode::TypedJson),
        other => Err(InterfaceError::UnknownWireMode {
            mode: other.to_owned(),
            span: mode.span(),
        }),
    }
}

fn parse_optional(attr: &Attribute) -> Option<u32> {
    let pair: syn::MetaNameValue = attr.parse_args().ok()?;
    if !pair.path.is_ident("since") {
        return None;
    }
    match pair.value {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(int),
            ..
        }) => int.base10_parse().ok(),
        _ => None,
    }
}

/// The `///` lines of an item, without the single space rustdoc keeps after `///`.
fn doc_lines(attrs: &[Attribute]) -> Vec<String> {
    attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            syn::Meta::NameValue(syn::MetaNameValue {
                value:
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(text),
                        ..
                    }),
                ..
            }) => Some(text.value()),
            _ => None,
        })
        .flat_map(|text| {
            text.split('\n')
                .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

impl InterfaceSpec {
    /// The run-time descriptor of this interface, for tools that read an interface from source
    /// (such as `fidius call`) instead of compiling it with `#[plugin_interface]`.
    ///
    pub fn descriptor(&self) -> OwnedInterfaceDescriptor {
        OwnedInterfaceDescriptor {
            trait_name: self.trait_name.clone(),
            version: self.version,
            interface_hash: self.hash,
            schema_fingerprint: self.schema_fingerprint,
            methods: self
                .methods
                .iter()
                .map(|method| OwnedMethodDescriptor {
                    name: method.name.clone(),
                    wire: method.wire,
                    args: method
                        .args
                        .iter()
                        .map(|arg| {
                            (
                                arg.name.clone().unwrap_or_else(|| "_".to_owned()),
                                arg.canonical.clone(),
                            )
                        })
                        .collect(),
                    returns: method.output_canonical.clone(),
                    optional_since: method.optional_since,
                    signature: method.signature.clone(),
                    streams_result: method.streams_output,
                    streams_argument: method.streams_input,
                    streamed_argument: method.streamed_argument(),
                })
                .collect(),
        }
    }
}
