//! Why a trait is not a valid interface. Each error carries the span of the offending tokens, so
//! the macro can point at them and `python-stub` can report a line and column.

use proc_macro2::Span;

/// One problem found in a `#[plugin_interface]` trait or in its attribute arguments.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum InterfaceError {
    #[error(transparent)]
    Syntax(#[from] syn::Error),
    #[error("`#[plugin_interface]` needs `version = N`, e.g. `#[plugin_interface(version = 1)]`")]
    MissingVersion { span: Span },
    #[error("unknown `#[plugin_interface]` argument `{name}`; expected `version` or `buffer`")]
    UnknownArgument { name: String, span: Span },
    #[error("`{name}` is given more than once")]
    DuplicateArgument { name: String, span: Span },
    #[error("`{name}` must be {expected}")]
    InvalidArgumentValue {
        name: String,
        expected: &'static str,
        span: Span,
    },
    #[error("an interface trait may contain only methods; remove this item")]
    UnsupportedItem { span: Span },
    #[error("method `{method}` is generic; interface methods cannot have type, lifetime or const parameters")]
    GenericMethod { method: String, span: Span },
    #[error("method `{method}` must take `&self` as its receiver")]
    InvalidReceiver { method: String, span: Span },
    #[error("method `{method}` has a raw-identifier name, which plugin method names cannot be; rename it")]
    RawIdentifierMethod { method: String, span: Span },
    #[error("method `{method}`: an argument must be a plain name or `_`")]
    UnsupportedPattern { method: String, span: Span },
    #[error("method `{method}`: variadic arguments are not supported")]
    Variadic { method: String, span: Span },
    #[error("method `{method}` is `#[wire(raw)]`, so it must take one `Vec<u8>` or `&[u8]` and return `Vec<u8>` or `Result<Vec<u8>, PluginError>`")]
    RawSignature { method: String, span: Span },
    #[error("unknown wire mode `{mode}`; expected `#[wire(raw)]` or `#[wire(json)]`")]
    UnknownWireMode { mode: String, span: Span },
    #[error("`#[optional]` must be written `#[optional(since = N)]` with an integer N")]
    InvalidOptional { span: Span },
    #[error("{message}")]
    CannotCrossTheWire { message: String, span: Span },
    #[error("attribute `#[{name}]` is given more than once on method `{method}`")]
    DuplicateMethodAttribute {
        name: &'static str,
        method: String,
        span: Span,
    },
}

impl InterfaceError {
    /// Where the problem is in the source.
    pub fn span(&self) -> Span {
        match self {
            Self::Syntax(error) => error.span(),
            Self::MissingVersion { span }
            | Self::UnknownArgument { span, .. }
            | Self::DuplicateArgument { span, .. }
            | Self::InvalidArgumentValue { span, .. }
            | Self::UnsupportedItem { span }
            | Self::GenericMethod { span, .. }
            | Self::InvalidReceiver { span, .. }
            | Self::RawIdentifierMethod { span, .. }
            | Self::UnsupportedPattern { span, .. }
            | Self::Variadic { span, .. }
            | Self::RawSignature { span, .. }
            | Self::UnknownWireMode { span, .. }
            | Self::InvalidOptional { span }
            | Self::CannotCrossTheWire { span, .. }
            | Self::DuplicateMethodAttribute { span, .. } => *span,
        }
    }

    /// The same problem as a [`syn::Error`], so it can become a spanned `compile_error!`.
    pub fn to_syn_error(&self) -> syn::Error {
        syn::Error::new(self.span(), self)
    }
}

/// Every problem found in one interface, in source order (never empty).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in the interface, the first: {}", .0.len(), .0.first().map(ToString::to_string).unwrap_or_default())]
pub struct InterfaceErrors(pub Vec<InterfaceError>);

impl InterfaceErrors {
    /// All problems as one [`syn::Error`] that reports each at its own span.
    pub fn to_syn_error(&self) -> syn::Error {
        let mut errors = self.0.iter().map(InterfaceError::to_syn_error);
        let mut combined = errors
            .next()
            .unwrap_or_else(|| syn::Error::new(Span::call_site(), "invalid interface"));
        for error in errors {
            combined.combine(error);
        }
        combined
    }
}
