//! Plugin instances: own-GIL sub-interpreters on dedicated worker threads.

mod dispatch;
pub(crate) mod instance;
mod loader;
pub(crate) mod source;
pub(crate) mod wait;
