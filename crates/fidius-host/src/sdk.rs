//! The `fidius` Python SDK, embedded so every interpreter gets the host's copy.
//!
//! These are the same files `pip install crates/fidius-host/python-sdk` installs for IDEs and plugin
//! unit tests; plugins never vendor them, and one plugin cannot shadow another's `fidius`.

/// Source of `fidius/__init__.py`: the module every plugin interpreter imports as `fidius`
/// (`fidius test` puts the same file on the path of a plugin's own tests).
pub const SDK_SOURCE: &str = include_str!("../python-sdk/fidius/__init__.py");
