//! What serves a plugin in either tier: its interface, the state its handle and backend share, and
//! its loaded versions.

pub(crate) mod descriptor;
pub(crate) mod shared;
pub(crate) mod version;
