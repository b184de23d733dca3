//! `serve` mode: one plugin instance in this process's main interpreter.

use std::ffi::OsString;
use std::process::ExitCode;

pub(super) fn main(_args: Vec<OsString>) -> ExitCode {
    ExitCode::FAILURE
}
