//! `probe` mode: which compiled extensions can be imported in an own-GIL sub-interpreter.

use std::ffi::OsString;
use std::process::ExitCode;

pub(super) fn main(_args: Vec<OsString>) -> ExitCode {
    ExitCode::FAILURE
}
