//! Source-only imports from plugin folders (see `plugin_imports.py`): no bytecode from a plugin
//! tree is ever read, and sourceless `.pyc` files there are not importable. The only bytecode used
//! for them is the host's private cache (`host::bytecode`), when the host verified the tree.

use std::path::Path;

use fidius_ffi::{FfiError, Interp};

use crate::plugin::precompiled::Precompiled;

static PLUGIN_IMPORTS: Precompiled =
    Precompiled::new(include_str!("plugin_imports.py"), "<fidius plugin_imports>");

/// Defines the source-only finder's code in the interpreter `py` (plugin-independent: a spare
/// interpreter does it ahead of time); [`install_source_only_imports`] then installs it.
pub(crate) fn define_source_only_imports(py: Interp<'_>) -> Result<(), FfiError> {
    PLUGIN_IMPORTS.run(py)
}

/// Installs the source-only finder for `roots` (the plugin folder and its `vendor/`) in the
/// interpreter `py`, where [`define_source_only_imports`] ran; call it before anything imports
/// from them. `bytecode_cache` is the host's private bytecode folder, given only for a tree the
/// host verified (see `PluginSource`).
pub(crate) fn install_source_only_imports(
    py: Interp<'_>,
    roots: &[&Path],
    bytecode_cache: Option<&Path>,
) -> Result<(), FfiError> {
    let install = py.eval("_fidius_source_only_imports")?;
    let folder = |path: &Path| {
        let path = path.to_str().ok_or_else(|| {
            FfiError::Python(fidius_ffi::PythonException {
                type_name: "fidius.BootstrapError".to_owned(),
                message: format!("folder {} is not UTF-8", path.display()),
                traceback: None,
            })
        })?;
        py.str(path)
    };
    let cache = match bytecode_cache {
        Some(dir) => folder(dir)?,
        None => py.none(),
    };
    let mut arguments = vec![cache];
    for root in roots {
        arguments.push(folder(root)?);
    }
    let arguments: Vec<_> = arguments.iter().collect();
    install
        .call(&arguments)
        .map_err(|raised| FfiError::Python(raised.describe()))?;
    Ok(())
}
