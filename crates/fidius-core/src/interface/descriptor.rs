//! The interface description a host needs at run time, built as a `const` by
//! `#[plugin_interface]` (`__fidius_<Trait>::<Trait>_PYTHON_DESCRIPTOR`).

/// How a method's arguments and result cross into Python.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum WireMode {
    /// Arguments go as a JSON array (positional), the result comes back as JSON.
    TypedJson,
    /// `#[wire(raw)]`: one `bytes` in, `bytes` out, no encoding.
    Raw,
}

/// One argument: its Rust name and canonical type string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PythonArgDescriptor {
    /// The argument's name in the trait (`_` when unnamed).
    pub name: &'static str,
    /// The canonical type string, as hashed (e.g. `Vec < u8 >`).
    pub ty: &'static str,
}

/// One trait method, in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PythonMethodDescriptor {
    /// The method name, which is also the Python function's name.
    pub name: &'static str,
    /// How arguments and the result are encoded.
    pub wire: WireMode,
    /// Arguments after `&self`, in order.
    pub args: &'static [PythonArgDescriptor],
    /// Canonical return type; empty when the method has no `->`.
    pub returns: &'static str,
    /// `Some(N)` for `#[optional(since = N)]`: left out of the hash and may be missing.
    pub optional_since: Option<u32>,
    /// The canonical signature string that enters the hash (`greet:String->String`).
    pub signature: &'static str,
    /// The method returns `Stream<T>` (`returns` is then `T`, the type of one item).
    pub streams_result: bool,
    /// One argument is `Stream<T>` (its `ty` is then `T`, the type of one item).
    pub streams_argument: bool,
    /// Which argument (an index into `args`) is the `Stream<T>` one; `Some` exactly when
    /// `streams_argument`. The plugin's function receives it there, as an iterator.
    pub streamed_argument: Option<usize>,
}

impl PythonMethodDescriptor {
    /// Whether a plugin may leave this method out.
    pub const fn is_optional(&self) -> bool {
        self.optional_since.is_some()
    }
}

/// A whole interface: what `host.load_python(name, &DESCRIPTOR)` checks a plugin against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PythonInterfaceDescriptor {
    /// The trait's name; a plugin's `__interface__` must equal it.
    pub trait_name: &'static str,
    /// `version = N` from the attribute.
    pub version: u32,
    /// The canonical interface hash; a plugin's `__interface_hash__` must equal it.
    pub interface_hash: u64,
    /// The [schema fingerprint](super::schema_fingerprint) of the structs and enums the methods
    /// use; a plugin that defines `__interface_schema__` must match it. `None` when the macro
    /// could not read the file declaring the trait (then no plugin's constant is checked).
    pub schema_fingerprint: Option<u64>,
    /// Every method in declaration order; method indexes used by calls refer to this slice.
    pub methods: &'static [PythonMethodDescriptor],
}

impl PythonInterfaceDescriptor {
    /// The index of the method called `name`.
    pub fn method_index(&self, name: &str) -> Option<usize> {
        self.methods.iter().position(|method| method.name == name)
    }

    /// The method at `index`.
    pub fn method(&self, index: usize) -> Option<&'static PythonMethodDescriptor> {
        self.methods.get(index)
    }

    /// The hash recomputed from the method signatures; equals
    /// [`interface_hash`](Self::interface_hash) for a descriptor the macro built.
    pub fn recomputed_hash(&self) -> u64 {
        super::hash_signatures(
            self.methods
                .iter()
                .filter(|method| !method.is_optional())
                .map(|method| method.signature),
        )
    }
}

/// A [`PythonInterfaceDescriptor`] that owns its strings: built at run time (from an interface's
/// source, or received from another process); a host loads plugins against either form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OwnedInterfaceDescriptor {
    pub trait_name: String,
    pub version: u32,
    pub interface_hash: u64,
    #[serde(default)]
    pub schema_fingerprint: Option<u64>,
    pub methods: Vec<OwnedMethodDescriptor>,
}

/// One method of an [`OwnedInterfaceDescriptor`]; the fields mean what [`PythonMethodDescriptor`]'s do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OwnedMethodDescriptor {
    pub name: String,
    pub wire: WireMode,
    /// `(name, canonical type)` of each argument.
    pub args: Vec<(String, String)>,
    pub returns: String,
    pub optional_since: Option<u32>,
    pub signature: String,
    #[serde(default)]
    pub streams_result: bool,
    #[serde(default)]
    pub streams_argument: bool,
    #[serde(default)]
    pub streamed_argument: Option<usize>,
}

impl From<&PythonInterfaceDescriptor> for OwnedInterfaceDescriptor {
    fn from(descriptor: &PythonInterfaceDescriptor) -> Self {
        Self {
            trait_name: descriptor.trait_name.to_owned(),
            version: descriptor.version,
            interface_hash: descriptor.interface_hash,
            schema_fingerprint: descriptor.schema_fingerprint,
            methods: descriptor
                .methods
                .iter()
                .map(|method| OwnedMethodDescriptor {
                    name: method.name.to_owned(),
                    wire: method.wire,
                    args: method
                        .args
                        .iter()
                        .map(|arg| (arg.name.to_owned(), arg.ty.to_owned()))
                        .collect(),
                    returns: method.returns.to_owned(),
                    optional_since: method.optional_since,
                    signature: method.signature.to_owned(),
                    streams_result: method.streams_result,
                    streams_argument: method.streams_argument,
                    streamed_argument: method.streamed_argument,
                })
                .collect(),
        }
    }
}

impl OwnedInterfaceDescriptor {
    /// The index of the method called `name`.
    pub fn method_index(&self, name: &str) -> Option<usize> {
        self.methods.iter().position(|method| method.name == name)
    }

    /// The method at `index`.
    pub fn method(&self, index: usize) -> Option<&OwnedMethodDescriptor> {
        self.methods.get(index)
    }
}

impl OwnedMethodDescriptor {
    /// Whether a plugin may leave this method out.
    pub const fn is_optional(&self) -> bool {
        self.optional_since.is_some()
    }
}
