//! The sub-interpreter runtime through the public handle: isolation, pools, calls and load checks.

mod support;

#[path = "runtime/calls.rs"]
mod calls;
#[path = "runtime/isolation.rs"]
mod isolation;
#[path = "runtime/load_checks.rs"]
mod load_checks;
