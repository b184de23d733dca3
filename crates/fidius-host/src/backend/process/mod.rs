//! The process tier: plugin instances in worker processes, behind the same handle.

pub(crate) mod child;
pub(crate) mod command;
pub(crate) mod mailbox;
pub(crate) mod probe;
pub(crate) mod protocol;
mod stream;
pub(crate) mod tail;
pub(crate) mod template;
pub(crate) mod workers;
