//! End-to-end tests of the `fidius` binary: one test binary, a module per feature.

mod cache;
mod call;
mod extensions;
mod failures;
mod forced_subinterpreter;
mod help;
mod numpy;
#[allow(
    dead_code,
    reason = "shared with fidius-core's tests; this suite uses part of it"
)]
#[path = "../../../fidius-core/tests/all/support.rs"]
mod package_support;
mod readme_tutorial;
mod rust_plugins;
mod scaffold;
mod streaming;
mod support;
mod test_command;
mod trust;
mod tutorial;
mod vendoring;
mod workflow;
