use fidius_macro::plugin_interface;

#[plugin_interface(version = 1)]
pub trait Generic {
    fn convert<T: serde::Serialize>(&self, value: T) -> String;
    fn borrow<'a>(&self, text: &'a str) -> u32;
}

fn main() {}
