// The cdylib plugin crate's lib.rs: two plugins of `Greeter` in one library.
use fidius::{plugin_impl, plugin_interface, PluginError};

include!("greeter.rs");

#[derive(Default)]
pub struct RustGreeter;

#[plugin_impl(Greeter, name = "rust-greeter")]
impl Greeter for RustGreeter {
    fn greet(&self, name: &str) -> String {
        format!("Hello, {name}!")
    }
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn norm(&self, point: Point) -> Result<i64, PluginError> {
        if point.x < 0 {
            return Err(PluginError::new("NEGATIVE", "x must not be negative"));
        }
        Ok(point.x + point.y.abs())
    }
    fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    fn boom(&self, message: String) -> String {
        panic!("{message}")
    }
    fn farewell(&self, name: String) -> String {
        format!("Goodbye, {name}.")
    }
}

#[derive(Default)]
pub struct LoudGreeter;

#[plugin_impl(Greeter, name = "loud-greeter")]
impl Greeter for LoudGreeter {
    fn greet(&self, name: &str) -> String {
        format!("HELLO, {}!", name.to_uppercase())
    }
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    fn norm(&self, point: Point) -> Result<i64, PluginError> {
        Ok(point.x)
    }
    fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    fn boom(&self, message: String) -> String {
        message
    }
}
