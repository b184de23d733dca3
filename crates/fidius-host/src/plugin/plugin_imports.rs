//! Source-only imports from plugin folders (see `plugin_imports.py`): no bytecode from a plugin
//! tree is ever read, and sourceless `.pyc` files there are not importable.

use std::path::Path;

use fidius_ffi::{FfiError, Interp};

const PLUGIN_IMPORTS_SOURCE: &str = include_str!("plugin_imports.py");

/// Installs the source-only finder for `roots` (the plugin folder and its `vendor/`) in the
/// interpreter `py`; call it before anything imports from them.
pub(crate) fn install_source_only_imports(py: Interp<'_>, roots: &[&Path]) -> Result<(), FfiError> {
    py.run(PLUGIN_IMPORTS_SOURCE)?;
    let install = py.eval("_fidius_source_only_imports")?;
    let roots = roots
        .iter()
        .map(|root| {
            let root = root.to_str().ok_or_else(|| {
                FfiError::Python(fidius_ffi::PythonException {
                    type_name: "fidius.BootstrapError".to_owned(),
                    message: format!("plugin folder {} is not UTF-8", root.display()),
                    traceback: None,
                })
            })?;
            py.str(root)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let roots: Vec<_> = roots.iter().collect();
    install
        .call(&roots)
        .map_err(|raised| FfiError::Python(raised.describe()))?;
    Ok(())
}
