//! Which Rust types can cross the wire to a Python plugin. Typed-JSON arguments are serialised
//! and results deserialised into owned values, so borrowed results, `&mut`, function pointers and
//! trait objects cannot be part of an interface. `Stream<T>` can, as the whole return type (a
//! streamed result) or as one whole argument (a streamed argument), its items crossing one by one.
//!
//! The macro refuses a trait for these problems, and `python-stub` (rendering and `--check`)
//! refuses it for the same ones: both call [`InterfaceSpec::python_wire_problems`].

use syn::spanned::Spanned;
use syn::{Type, TypeReference};

use super::error::InterfaceError;
use super::{shape, InterfaceSpec, MethodSpec, WireMode};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Argument,
    Return,
}

impl InterfaceSpec {
    /// Every reason this interface cannot be served by a Python plugin, each spanned at the
    /// offending type; empty when it can.
    pub fn python_wire_problems(&self) -> Vec<InterfaceError> {
        self.methods.iter().flat_map(method_problems).collect()
    }
}

fn method_problems(method: &MethodSpec) -> Vec<InterfaceError> {
    let mut errors = Vec::new();
    if method.wire == WireMode::Raw {
        // The raw shape (bytes in, bytes out, so never a stream) was enforced when it was read.
        return errors;
    }
    let streamed_arguments = method
        .args
        .iter()
        .filter(|arg| shape::stream_item(&arg.ty).is_some())
        .count();
    if streamed_arguments > 1 {
        errors.push(InterfaceError::CannotCrossTheWire {
            message: format!(
                "method `{}` takes {streamed_arguments} `Stream<T>` arguments; a method may stream at most one",
                method.name
            ),
            span: method.span,
        });
    }
    for arg in &method.args {
        let ty = shape::stream_item(&arg.ty).unwrap_or(&arg.ty);
        check_type(ty, Position::Argument, &mut errors);
    }
    if let Some(output) = &method.output {
        if let Some(item) = shape::stream_item(output) {
            check_type(item, Position::Return, &mut errors);
            return errors;
        }
        match shape::result_parts(output) {
            Some((ok, error)) => {
                if !is_plugin_error(error) {
                    refuse(
                        &mut errors,
                        error,
                        "the error type of a plugin method must be `PluginError`: a Python plugin can only raise `PluginError`",
                    );
                }
                check_type(ok, Position::Return, &mut errors);
            }
            None => check_type(output, Position::Return, &mut errors),
        }
    }
    errors
}

fn refuse(errors: &mut Vec<InterfaceError>, ty: &Type, message: &str) {
    errors.push(InterfaceError::CannotCrossTheWire {
        message: message.to_owned(),
        span: ty.span(),
    });
}

fn is_plugin_error(ty: &Type) -> bool {
    matches!(shape::path_parts(ty), Some((name, args)) if name == "PluginError" && args.is_empty())
}

fn check_type(ty: &Type, position: Position, errors: &mut Vec<InterfaceError>) {
    match ty {
        Type::Reference(reference) => check_reference(ty, reference, position, errors),
        Type::Path(path) if path.qself.is_some() => refuse(
            errors,
            ty,
            "qualified associated types (`<T as Trait>::X`) cannot cross the wire; name a concrete type",
        ),
        Type::Path(_) if shape::stream_item(ty).is_some() => refuse(
            errors,
            ty,
            "`Stream<T>` must be the whole return type or a whole argument, not part of another type",
        ),
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
        Type::BareFn(_) => refuse(
            errors,
            ty,
            "function pointers cannot cross the wire to a Python plugin",
        ),
        Type::TraitObject(_) | Type::ImplTrait(_) => refuse(
            errors,
            ty,
            "trait objects and `impl Trait` cannot cross the wire to a Python plugin; use a concrete serde type",
        ),
        Type::Ptr(_) => refuse(
            errors,
            ty,
            "raw pointers cannot cross the wire to a Python plugin",
        ),
        _ => refuse(
            errors,
            ty,
            "this type cannot cross the wire to a Python plugin; use a concrete serde type",
        ),
    }
}

fn check_reference(
    ty: &Type,
    reference: &TypeReference,
    position: Position,
    errors: &mut Vec<InterfaceError>,
) {
    if position == Position::Return {
        refuse(
            errors,
            ty,
            "a plugin method cannot return a reference: the result is decoded into an owned value",
        );
    } else if reference.mutability.is_some() {
        refuse(
            errors,
            ty,
            "`&mut` cannot cross the wire: changes made by the plugin are not copied back",
        );
    } else {
        check_type(&reference.elem, position, errors);
    }
}
