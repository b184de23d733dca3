//! Questions about the shape of a `syn::Type`, answered from its syntax alone (no name
//! resolution: the macro and `python-stub` both see tokens, not resolved types).

use syn::{GenericArgument, PathArguments, Type};

/// The last path segment's name and its generic type arguments, looking through parentheses:
/// `std::collections::HashMap<String, u8>` gives `("HashMap", [String, u8])`.
pub fn path_parts(ty: &Type) -> Option<(String, Vec<&Type>)> {
    match ty {
        Type::Paren(inner) => path_parts(&inner.elem),
        Type::Group(inner) => path_parts(&inner.elem),
        Type::Path(path) if path.qself.is_none() => {
            let segment = path.path.segments.last()?;
            let args = match &segment.arguments {
                PathArguments::AngleBracketed(generics) => generics
                    .args
                    .iter()
                    .filter_map(|arg| match arg {
                        GenericArgument::Type(ty) => Some(ty),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some((segment.ident.to_string(), args))
        }
        _ => None,
    }
}

/// `Name<T>` with exactly one type argument: returns `T`.
pub fn single_generic<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    match path_parts(ty)? {
        (ident, args) if ident == name && args.len() == 1 => args.first().copied(),
        _ => None,
    }
}

/// `Result<T, E>`: returns `(T, E)`.
pub fn result_parts(ty: &Type) -> Option<(&Type, &Type)> {
    match path_parts(ty)? {
        (ident, args) if ident == "Result" && args.len() == 2 => Some((args[0], args[1])),
        _ => None,
    }
}

/// `Stream<T>` (any path ending in `Stream`): returns `T`.
pub fn stream_item(ty: &Type) -> Option<&Type> {
    single_generic(ty, "Stream")
}

/// `u8`, possibly parenthesised.
pub fn is_u8(ty: &Type) -> bool {
    matches!(path_parts(ty), Some((ident, args)) if ident == "u8" && args.is_empty())
}

/// `Vec<u8>`.
pub fn is_byte_vec(ty: &Type) -> bool {
    single_generic(ty, "Vec").is_some_and(is_u8)
}

/// `&[u8]`.
pub fn is_byte_slice_ref(ty: &Type) -> bool {
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => {
            matches!(&*reference.elem, Type::Slice(slice) if is_u8(&slice.elem))
        }
        _ => false,
    }
}

/// The `T` in `Result<T, E>`, or `ty` itself: what a successful call returns.
pub fn success_type(ty: &Type) -> &Type {
    result_parts(ty).map_or(ty, |(ok, _)| ok)
}
