//! The process tier: plugin instances in worker processes, behind the same handle.

pub(crate) mod command;
pub(crate) mod probe;
