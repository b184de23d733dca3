//! fidius core: everything about plugins that needs no Python interpreter.
// `deny`, not `forbid`: `abi` (the C boundary of cdylib plugins) is the one module allowed `unsafe`.
#![deny(unsafe_code)]

pub mod abi;

pub mod archive;
pub mod call;
pub mod digest;
pub mod dist_info;
pub mod extensions;
pub mod fs;
pub mod interface;
pub mod manifest;
pub mod package_error;
pub mod signing;
pub mod toml_error;
pub mod tree;

pub use call::{
    AsyncPluginCall, CallError, PluginCall, PluginError, PythonError, Stream, StreamedArgumentCall,
    StreamingCall, WorkerExit,
};
pub use interface::{PythonInterfaceDescriptor, WireMode};
pub use package_error::PackageError;
