use fidius_macro::plugin_interface;

#[plugin_interface(version = 1)]
pub trait Receivers {
    fn mutate(&mut self, value: u32);
    fn consume(self) -> u32;
    fn boxed(self: Box<Self>) -> u32;
    fn associated(value: u32) -> u32;
}

fn main() {}
