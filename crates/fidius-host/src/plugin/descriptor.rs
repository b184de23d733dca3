//! The interface a plugin is loaded against, in the one form the host works with.

use std::ops::Deref;
use std::sync::Arc;

use fidius_core::interface::{OwnedInterfaceDescriptor, PythonInterfaceDescriptor};

/// An interface descriptor owned by the host and shared by everything serving one plugin.
///
/// Built from the `const` descriptor `#[plugin_interface]` generates (`host.load_python(name,
/// &DESCRIPTOR)`: copied once per load) or from one built at run time, such as an interface read
/// from source ([`InterfaceSpec::descriptor`](fidius_core::interface::InterfaceSpec::descriptor)) or
/// received by a worker process, without leaking it into a `'static`. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDescriptor(Arc<OwnedInterfaceDescriptor>);

impl Deref for SharedDescriptor {
    type Target = OwnedInterfaceDescriptor;

    fn deref(&self) -> &OwnedInterfaceDescriptor {
        &self.0
    }
}

impl From<&PythonInterfaceDescriptor> for SharedDescriptor {
    fn from(descriptor: &PythonInterfaceDescriptor) -> Self {
        Self(Arc::new(descriptor.into()))
    }
}

impl From<Arc<PythonInterfaceDescriptor>> for SharedDescriptor {
    fn from(descriptor: Arc<PythonInterfaceDescriptor>) -> Self {
        Self::from(&*descriptor)
    }
}

impl From<OwnedInterfaceDescriptor> for SharedDescriptor {
    fn from(descriptor: OwnedInterfaceDescriptor) -> Self {
        Self(Arc::new(descriptor))
    }
}

impl From<Arc<OwnedInterfaceDescriptor>> for SharedDescriptor {
    fn from(descriptor: Arc<OwnedInterfaceDescriptor>) -> Self {
        Self(descriptor)
    }
}
