//! The boundary between a host and a Rust `cdylib` plugin: what `#[plugin_impl]` exports and what
//! a host reads, on both sides of `dlopen`.
//!
//! Each `#[plugin_impl(Trait)]` exports one symbol, `fidius_plugin_<Type>`, holding a
//! [`RustPluginDescriptor`]: a magic number, the ABI version, the interface's name, hash and
//! version, the plugin's name and version (all plain bytes, so a host reads them from the file
//! before it maps the library), then the method table (one `extern "C"` entry per trait method in
//! declaration order; an `#[optional]` method the impl leaves out is a null entry) and the function
//! that frees the buffers the plugin returns. A library may export several plugins.
//!
//! A call crosses as bytes, in the same encodings as a call into a Python plugin: a typed method
//! takes the JSON array of its arguments and returns the JSON of its result; a `#[wire(raw)]`
//! method takes and returns bytes. A status of [`STATUS_ERROR`] means the output holds a
//! [`CallError`] in its serde (JSON) form: `Plugin` for the impl's `Err(PluginError)`, `Panic`
//! for a panic (caught at the boundary, never unwound into the host), `InvalidArguments` for
//! arguments that do not decode. The output buffer is allocated by the plugin and handed back to
//! the plugin's own free function, so host and plugin may use different allocators.
#![allow(
    unsafe_code,
    reason = "the C boundary of cdylib plugins: raw buffers and fn pointers"
)]

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::{CallError, PluginError};
use crate::interface::PythonInterfaceDescriptor;

/// The first bytes of every [`RustPluginDescriptor`].
pub const MAGIC: [u8; 8] = *b"FIDIUSRS";
/// The layout version of [`RustPluginDescriptor`] and of the call convention.
pub const ABI_VERSION: u32 = 1;
/// Every exported descriptor's symbol starts with this; the rest is the plugin type's name.
pub const SYMBOL_PREFIX: &str = "fidius_plugin_";
/// The longest interface name, plugin name or version a descriptor can carry, in bytes.
pub const MAX_NAME_LEN: usize = 120;

/// A call succeeded; the output holds the result.
pub const STATUS_OK: u32 = 0;
/// A call failed; the output holds a JSON [`CallError`].
pub const STATUS_ERROR: u32 = 1;

/// A string stored inline, so the descriptor's header has no pointers (and no relocations).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InlineStr {
    len: u32,
    bytes: [u8; MAX_NAME_LEN],
}

impl InlineStr {
    /// `text`, inline. Too long a text fails at compile time (this runs in a `static`).
    pub const fn new(text: &str) -> Self {
        let source = text.as_bytes();
        assert!(
            source.len() <= MAX_NAME_LEN,
            "fidius: a plugin's names and version must be at most 120 bytes"
        );
        let mut bytes = [0; MAX_NAME_LEN];
        let mut index = 0;
        while index < source.len() {
            bytes[index] = source[index];
            index += 1;
        }
        Self {
            len: source.len() as u32,
            bytes,
        }
    }

    /// The text, or `None` when the length or the bytes are not valid (a foreign or broken file).
    pub fn as_str(&self) -> Option<&str> {
        let len = usize::try_from(self.len).ok()?;
        std::str::from_utf8(self.bytes.get(..len)?).ok()
    }
}

/// The input of one call: bytes the host lends for the duration of the call.
#[repr(C)]
pub struct CallInput<'a> {
    ptr: *const u8,
    len: usize,
    _borrow: PhantomData<&'a [u8]>,
}

impl<'a> CallInput<'a> {
    /// Lends `bytes` to a plugin method.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
            _borrow: PhantomData,
        }
    }

    /// The lent bytes.
    pub fn as_slice(&self) -> &'a [u8] {
        // SAFETY: a `CallInput` is only made by `new` from a slice that outlives `'a` (its fields
        // are private), so `ptr` and `len` describe initialised, borrowed memory.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A buffer a plugin returns: a `Vec<u8>`'s parts, allocated by the plugin, freed by
/// [`RustPluginDescriptor::free_output`] (never by the host's allocator).
#[repr(C)]
pub struct CallOutput {
    ptr: *mut u8,
    len: usize,
    capacity: usize,
}

impl CallOutput {
    /// An empty output slot for a call to fill.
    pub const fn empty() -> Self {
        Self {
            ptr: std::ptr::null_mut(),
            len: 0,
            capacity: 0,
        }
    }

    fn set(&mut self, bytes: Vec<u8>) {
        let mut bytes = ManuallyDrop::new(bytes);
        self.ptr = bytes.as_mut_ptr();
        self.len = bytes.len();
        self.capacity = bytes.capacity();
    }

    /// The bytes a call wrote (empty when it wrote none).
    ///
    /// # Safety
    ///
    /// `self` must have been filled by a plugin method of a loaded library (or be empty) and not
    /// yet been freed.
    pub unsafe fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the caller promises the parts came from a live `Vec<u8>` the plugin made.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// One method's entry: the call's input, the output slot it fills, and its status.
pub type MethodFn = extern "C" fn(input: CallInput<'_>, output: &mut CallOutput) -> u32;

/// Frees an output a method of the same library filled.
pub type FreeFn = extern "C" fn(output: &mut CallOutput);

/// The exported descriptor of one plugin (see the [module docs](self)). Everything before
/// `method_count` is plain bytes.
#[repr(C)]
pub struct RustPluginDescriptor {
    pub magic: [u8; 8],
    pub abi_version: u32,
    pub interface_version: u32,
    pub interface_hash: u64,
    pub interface_name: InlineStr,
    pub plugin_name: InlineStr,
    pub plugin_version: InlineStr,
    pub method_count: u32,
    methods: *const Option<MethodFn>,
    pub free_output: FreeFn,
}

// SAFETY: the descriptor is immutable and points only at a `'static` table of fn pointers.
unsafe impl Sync for RustPluginDescriptor {}

impl RustPluginDescriptor {
    /// The descriptor `#[plugin_impl]` exports for a plugin of `interface`.
    pub const fn new(
        interface: &PythonInterfaceDescriptor,
        plugin_name: &str,
        plugin_version: &str,
        methods: &'static [Option<MethodFn>],
    ) -> Self {
        Self {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            interface_version: interface.version,
            interface_hash: interface.interface_hash,
            interface_name: InlineStr::new(interface.trait_name),
            plugin_name: InlineStr::new(plugin_name),
            plugin_version: InlineStr::new(plugin_version),
            method_count: methods.len() as u32,
            methods: methods.as_ptr(),
            free_output,
        }
    }

    /// The method table.
    ///
    /// # Safety
    ///
    /// `self` must be a descriptor exported by a library that is still loaded, whose magic and
    /// ABI version were checked (so its layout is this one).
    pub unsafe fn methods(&self) -> &[Option<MethodFn>] {
        let Ok(count) = usize::try_from(self.method_count) else {
            return &[];
        };
        if self.methods.is_null() {
            return &[];
        }
        // SAFETY: the caller promises a checked descriptor; `new` stores a `'static` slice's parts.
        unsafe { std::slice::from_raw_parts(self.methods, count) }
    }
}

/// The size of a descriptor's header: the bytes a host reads from the file before mapping it.
pub const HEADER_LEN: usize = std::mem::offset_of!(RustPluginDescriptor, method_count);

/// What a descriptor's header says, read from raw bytes (the library file, before `dlopen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorHeader {
    pub magic: [u8; 8],
    pub abi_version: u32,
    pub interface_version: u32,
    pub interface_hash: u64,
    pub interface_name: Option<String>,
    pub plugin_name: Option<String>,
    pub plugin_version: Option<String>,
}

impl DescriptorHeader {
    /// Reads the header from the first [`HEADER_LEN`] bytes of `bytes` (native byte order, as the
    /// library was built for this host's architecture); `None` when there are fewer.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        let bytes = bytes.get(..HEADER_LEN)?;
        let u32_at = |offset: usize| {
            let mut word = [0; 4];
            word.copy_from_slice(&bytes[offset..offset + 4]);
            u32::from_ne_bytes(word)
        };
        let inline_at = |offset: usize| {
            let len = usize::try_from(u32_at(offset)).ok()?;
            let text = bytes
                .get(offset + 4..offset + 4 + MAX_NAME_LEN)?
                .get(..len)?;
            std::str::from_utf8(text).ok().map(str::to_owned)
        };
        let mut magic = [0; 8];
        magic.copy_from_slice(&bytes[..8]);
        let mut hash = [0; 8];
        hash.copy_from_slice(&bytes[16..24]);
        Some(Self {
            magic,
            abi_version: u32_at(std::mem::offset_of!(RustPluginDescriptor, abi_version)),
            interface_version: u32_at(std::mem::offset_of!(
                RustPluginDescriptor,
                interface_version
            )),
            interface_hash: u64::from_ne_bytes(hash),
            interface_name: inline_at(std::mem::offset_of!(RustPluginDescriptor, interface_name)),
            plugin_name: inline_at(std::mem::offset_of!(RustPluginDescriptor, plugin_name)),
            plugin_version: inline_at(std::mem::offset_of!(RustPluginDescriptor, plugin_version)),
        })
    }

    /// The header of a loaded descriptor.
    pub fn of(descriptor: &RustPluginDescriptor) -> Self {
        Self {
            magic: descriptor.magic,
            abi_version: descriptor.abi_version,
            interface_version: descriptor.interface_version,
            interface_hash: descriptor.interface_hash,
            interface_name: descriptor.interface_name.as_str().map(str::to_owned),
            plugin_name: descriptor.plugin_name.as_str().map(str::to_owned),
            plugin_version: descriptor.plugin_version.as_str().map(str::to_owned),
        }
    }
}

const _: () = assert!(std::mem::offset_of!(RustPluginDescriptor, interface_hash) == 16);

extern "C" fn free_output(output: &mut CallOutput) {
    if output.ptr.is_null() {
        return;
    }
    // SAFETY: `ptr`, `len` and `capacity` are a `Vec<u8>`'s parts that `CallOutput::set` in this
    // same library took apart; the host hands each output back once, and it is emptied here.
    drop(unsafe { Vec::from_raw_parts(output.ptr, output.len, output.capacity) });
    *output = CallOutput::empty();
}

/// A plugin type `#[plugin_impl]` serves: the one instance every call goes to.
pub trait RustPlugin: Sync + 'static {
    /// The instance (made on first use).
    fn instance() -> &'static Self;
}

/// Support code for what `#[plugin_interface]` and `#[plugin_impl]` generate. Not a stable API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Whether `name` is among `names` (a `const fn`, for building method tables in statics).
    pub const fn contains(names: &[&str], name: &str) -> bool {
        let mut index = 0;
        while index < names.len() {
            if str_eq(names[index], name) {
                return true;
            }
            index += 1;
        }
        false
    }

    const fn str_eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut index = 0;
        while index < a.len() {
            if a[index] != b[index] {
                return false;
            }
            index += 1;
        }
        true
    }

    /// How a typed method's arguments `A` decode and its value `V` encodes, as a bound on the
    /// plugin type `T` of a generated entry (`T: Codec<A, V>`). Being a bound on `T`, it is checked
    /// where `#[plugin_impl]` names the type, not where `#[plugin_interface]` generates the entry:
    /// an interface whose types only serialise one way still compiles; only a Rust plugin of it
    /// needs them to `Deserialize` (arguments) and `Serialize` (results).
    pub trait Codec<A, V> {
        fn decode_arguments(bytes: &[u8]) -> serde_json::Result<A>;
        fn encode_value(value: &V) -> serde_json::Result<Vec<u8>>;
    }

    impl<T: ?Sized, A: DeserializeOwned, V: Serialize> Codec<A, V> for T {
        fn decode_arguments(bytes: &[u8]) -> serde_json::Result<A> {
            serde_json::from_slice(bytes)
        }

        fn encode_value(value: &V) -> serde_json::Result<Vec<u8>> {
            serde_json::to_vec(value)
        }
    }

    /// Serves a typed call: decodes the JSON arguments as `A`, runs `body`, encodes the result.
    pub fn serve_typed<C: Codec<A, V> + ?Sized, A, V>(
        method: &str,
        input: CallInput<'_>,
        output: &mut CallOutput,
        body: impl FnOnce(A) -> Result<V, PluginError>,
    ) -> u32 {
        serve(method, output, || {
            let args = C::decode_arguments(input.as_slice()).map_err(|error| {
                CallError::InvalidArguments {
                    method: method.to_owned(),
                    reason: error.to_string(),
                }
            })?;
            let value = body(args).map_err(CallError::Plugin)?;
            C::encode_value(&value).map_err(|error| CallError::InvalidResult {
                method: method.to_owned(),
                reason: error.to_string(),
            })
        })
    }

    /// Serves a `#[wire(raw)]` call: the bytes in, the bytes out.
    pub fn serve_raw(
        method: &str,
        input: CallInput<'_>,
        output: &mut CallOutput,
        body: impl FnOnce(&[u8]) -> Result<Vec<u8>, PluginError>,
    ) -> u32 {
        serve(method, output, || {
            body(input.as_slice()).map_err(CallError::Plugin)
        })
    }

    /// Runs `call` with panics caught: they never unwind into the host, they become
    /// [`CallError::Panic`] with the panic's message.
    fn serve(
        method: &str,
        output: &mut CallOutput,
        call: impl FnOnce() -> Result<Vec<u8>, CallError>,
    ) -> u32 {
        let outcome = catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|payload| {
            Err(CallError::Panic {
                method: method.to_owned(),
                message: panic_message(payload.as_ref()),
            })
        });
        match outcome {
            Ok(bytes) => {
                output.set(bytes);
                STATUS_OK
            }
            Err(error) => {
                // The error's serde form cannot fail to encode (strings and JSON values only);
                // an empty error output is decoded by the host as an invalid one anyway.
                output.set(serde_json::to_vec(&error).unwrap_or_default());
                STATUS_ERROR
            }
        }
    }

    fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_owned()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a panic without a message".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static METHODS: [Option<MethodFn>; 0] = [];
    static DESCRIPTOR: RustPluginDescriptor = RustPluginDescriptor::new(
        &PythonInterfaceDescriptor {
            trait_name: "Greeter",
            version: 3,
            interface_hash: 0x0123_4567_89ab_cdef,
            schema_fingerprint: None,
            methods: &[],
        },
        "MyGreeter",
        "0.2.0",
        &METHODS,
    );

    #[test]
    fn header_reads_back_from_the_descriptor_bytes() {
        let pointer = std::ptr::from_ref(&DESCRIPTOR).cast::<u8>();
        // SAFETY: reading the first HEADER_LEN bytes of a live static of a larger size.
        let bytes = unsafe { std::slice::from_raw_parts(pointer, HEADER_LEN) };
        let header = DescriptorHeader::read(bytes).expect("long enough");
        assert_eq!(header, DescriptorHeader::of(&DESCRIPTOR));
        assert_eq!(header.magic, MAGIC);
        assert_eq!(header.interface_name.as_deref(), Some("Greeter"));
        assert_eq!(header.plugin_version.as_deref(), Some("0.2.0"));
        assert_eq!(header.interface_hash, 0x0123_4567_89ab_cdef);
        assert_eq!(DescriptorHeader::read(&bytes[..HEADER_LEN - 1]), None);
    }

    #[test]
    fn panics_and_plugin_errors_become_call_errors() {
        let input = CallInput::new(br#"["x"]"#);
        let mut output = CallOutput::empty();
        let status = __private::serve_typed::<(), (String,), String>(
            "greet",
            input,
            &mut output,
            |(_name,)| panic!("boom {}", 7),
        );
        assert_eq!(status, STATUS_ERROR);
        // SAFETY: filled just now by serve_typed.
        let error: CallError = serde_json::from_slice(unsafe { output.as_slice() }).expect("json");
        assert!(
            matches!(&error, CallError::Panic { method, message } if method == "greet" && message == "boom 7"),
            "{error:?}"
        );
        (DESCRIPTOR.free_output)(&mut output);
        assert!(output.ptr.is_null());
    }
}
