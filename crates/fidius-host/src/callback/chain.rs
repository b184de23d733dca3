//! Which plugins the current thread is serving a call of, so a host function that calls back into
//! one of them is refused instead of waiting for itself.
//!
//! A call pushes its plugin on the calling thread's chain while it waits (the process tier runs the
//! worker's host functions on that thread); the thread tier hands the chain over with the request,
//! and the instance thread adopts it while it serves the call (its host functions run there). A call
//! to a plugin already on the chain is re-entrant.

use std::cell::RefCell;
use std::sync::Arc;

use crate::plugin::shared::PluginShared;

/// Identifies one loaded plugin (handle and its clones) while it is alive: the address of its
/// shared state.
pub(crate) type PluginId = usize;

thread_local! {
    static SERVING: RefCell<Vec<PluginId>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn plugin_id(plugin: &Arc<PluginShared>) -> PluginId {
    Arc::as_ptr(plugin) as PluginId
}

/// Pops the plugin [`enter`] pushed, when the call returns or unwinds.
pub(crate) struct Serving(());

impl Drop for Serving {
    fn drop(&mut self) {
        SERVING.with_borrow_mut(Vec::pop);
    }
}

/// Records that this thread waits for a call of `plugin`; `None` if it already serves one (the
/// call is re-entrant).
pub(crate) fn enter(plugin: PluginId) -> Option<Serving> {
    SERVING.with_borrow_mut(|chain| {
        if chain.contains(&plugin) {
            return None;
        }
        chain.push(plugin);
        Some(Serving(()))
    })
}

/// The calling thread's chain, for the thread that will serve its call.
pub(crate) fn snapshot() -> Vec<PluginId> {
    SERVING.with_borrow(Clone::clone)
}

/// Puts the thread's own chain back when the adopted one is no longer needed.
pub(crate) struct Adopted(Vec<PluginId>);

impl Drop for Adopted {
    fn drop(&mut self) {
        let own = std::mem::take(&mut self.0);
        SERVING.with_borrow_mut(|chain| *chain = own);
    }
}

/// Makes `chain` (a caller's [`snapshot`]) this thread's chain until the guard drops.
pub(crate) fn adopt(chain: &[PluginId]) -> Adopted {
    SERVING.with_borrow_mut(|own| {
        let mut adopted = chain.to_vec();
        std::mem::swap(own, &mut adopted);
        Adopted(adopted)
    })
}
