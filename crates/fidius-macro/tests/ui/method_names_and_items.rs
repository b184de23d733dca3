use fidius_macro::plugin_interface;

#[plugin_interface(version = 1)]
pub trait Items {
    fn r#type(&self) -> String;
    const LIMIT: u32;
    type Output;
    #[optional]
    fn later(&self) -> String;
    #[optional(since = 2)]
    #[optional(since = 3)]
    fn twice(&self) -> String;
}

fn main() {}
