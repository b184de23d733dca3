//! The sub-interpreter runtime through the public handle: isolation, pools, calls and load checks.

mod support;

#[path = "runtime/calls.rs"]
mod calls;
#[path = "runtime/faults.rs"]
mod faults;
#[path = "runtime/isolation.rs"]
mod isolation;
#[path = "runtime/load_checks.rs"]
mod load_checks;
#[path = "runtime/output.rs"]
mod output;
#[path = "runtime/timeouts.rs"]
mod timeouts;
