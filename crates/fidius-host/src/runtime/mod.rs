//! Plugin instances: own-GIL sub-interpreters on dedicated worker threads.

pub(crate) mod dispatch;
pub(crate) mod generation;
pub(crate) mod instance;
pub(crate) mod loader;
pub(crate) mod output;
pub(crate) mod plugin_imports;
pub(crate) mod pool;
pub(crate) mod source;
pub(crate) mod wait;
mod watchdog;
