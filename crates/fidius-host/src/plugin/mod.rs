//! What serves a plugin in either tier: its interface, the state its handle and backend share, and
//! its loaded versions.

pub(crate) mod descriptor;
pub(crate) mod dispatch;
pub(crate) mod loader;
pub(crate) mod output;
pub(crate) mod plugin_imports;
pub(crate) mod precompiled;
pub(crate) mod shared;
pub(crate) mod source;
pub(crate) mod stream;
pub(crate) mod stream_input;
pub(crate) mod version;
