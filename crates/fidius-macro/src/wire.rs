//! Which Rust types can cross the wire to a Python plugin. Typed-JSON arguments are serialised
//! and results deserialised into owned values, so borrowed results, `&mut`, function pointers,
//! trait objects and streams cannot be part of an interface the typed client calls.

use fidius_core::interface::{shape, MethodSpec, WireMode};
use syn::spanned::Spanned;
use syn::{Type, TypeReference};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Argument,
    Return,
}

/// Every wire problem in `method`, each spanned at the offending type.
pub fn problems(method: &MethodSpec) -> Vec<syn::Error> {
    let mut errors = Vec::new();
    if method.streams_input || method.streams_output {
        errors.push(syn::Error::new(
            method.span,
            format!(
                "method `{}` uses `Stream<T>`, which Python plugins do not support",
                method.name
            ),
        ));
        return errors;
    }
    if method.wire == WireMode::Raw {
        // The raw shape (bytes in, bytes out) was already enforced by fidius_core.
        return errors;
    }
    for arg in &method.args {
        check_type(&arg.ty, Position::Argument, &mut errors);
    }
    if let Some(output) = &method.output {
        match shape::result_parts(output) {
            Some((ok, error)) => {
                if !is_plugin_error(error) {
                    errors.push(syn::Error::new(
                        error.span(),
                        "the error type of a plugin method must be `PluginError`: a Python plugin can only raise `PluginError`",
                    ));
                }
                check_type(ok, Position::Return, &mut errors);
            }
            None => check_type(output, Position::Return, &mut errors),
        }
    }
    errors
}

fn is_plugin_error(ty: &Type) -> bool {
    matches!(shape::path_parts(ty), Some((name, args)) if name == "PluginError" && args.is_empty())
}

fn check_type(ty: &Type, position: Position, errors: &mut Vec<syn::Error>) {
    let mut refuse = |message: &str| errors.push(syn::Error::new(ty.span(), message));
    match ty {
        Type::Reference(reference) => check_reference(ty, reference, position, errors),
        Type::Path(path) if path.qself.is_some() => {
            refuse("qualified associated types (`<T as Trait>::X`) cannot cross the wire; name a concrete type");
        }
        Type::Path(_) => {
            if let Some((_, args)) = shape::path_parts(ty) {
                args.into_iter()
                    .for_each(|arg| check_type(arg, position, errors));
            }
        }
        Type::Tuple(tuple) => tuple
            .elems
            .iter()
            .for_each(|elem| check_type(elem, position, errors)),
        Type::Array(array) => check_type(&array.elem, position, errors),
        Type::Slice(slice) => check_type(&slice.elem, position, errors),
        Type::Paren(inner) => check_type(&inner.elem, position, errors),
        Type::Group(inner) => check_type(&inner.elem, position, errors),
        Type::BareFn(_) => refuse("function pointers cannot cross the wire to a Python plugin"),
        Type::TraitObject(_) | Type::ImplTrait(_) => {
            refuse("trait objects and `impl Trait` cannot cross the wire to a Python plugin; use a concrete serde type");
        }
        Type::Ptr(_) => refuse("raw pointers cannot cross the wire to a Python plugin"),
        _ => {
            refuse("this type cannot cross the wire to a Python plugin; use a concrete serde type")
        }
    }
}

fn check_reference(
    ty: &Type,
    reference: &TypeReference,
    position: Position,
    errors: &mut Vec<syn::Error>,
) {
    if position == Position::Return {
        errors.push(syn::Error::new(
            ty.span(),
            "a plugin method cannot return a reference: the result is decoded into an owned value",
        ));
    } else if reference.mutability.is_some() {
        errors.push(syn::Error::new(
            ty.span(),
            "`&mut` cannot cross the wire: changes made by the plugin are not copied back",
        ));
    } else {
        check_type(&reference.elem, position, errors);
    }
}
