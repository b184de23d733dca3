// The interface of the Rust plugin tests, included both by the test binary (through
// `fidius_macro::plugin_interface`) and by the cdylib plugin crate the tests build (through the
// `fidius` facade): one trait, so both sides compute the same interface hash.

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub x: i64,
    pub y: i64,
}

#[plugin_interface(version = 1)]
pub trait Greeter {
    fn greet(&self, name: &str) -> String;
    fn add(&self, a: i64, b: i64) -> i64;
    fn norm(&self, point: Point) -> Result<i64, PluginError>;
    #[wire(raw)]
    fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    fn boom(&self, message: String) -> String;
    #[optional(since = 2)]
    fn farewell(&self, name: String) -> String {
        name
    }
    #[optional(since = 2)]
    fn shout(&self, name: String) -> String {
        name
    }
}
