//! The thread backend's parts (instance threads, their generations, deadlines and queue waits),
//! and plugin code both tiers run (loader, dispatch, output, bootstrap, source-only imports).

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
