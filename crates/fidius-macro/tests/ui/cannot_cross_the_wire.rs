use fidius_core::PluginError;
use fidius_macro::plugin_interface;

pub struct Stream<T>(T);

#[plugin_interface(version = 1)]
pub trait NotWireable {
    fn callback(&self, f: fn(u8) -> u8) -> u8;
    fn boxed(&self) -> Box<dyn std::error::Error + Send>;
    fn label(&self) -> &'static str;
    fn fill(&self, buffer: &mut [u8]) -> usize;
    fn read(&self, path: String) -> Option<Stream<u64>>;
    fn merge(&self, left: Stream<u64>, right: Stream<u64>) -> Stream<u64>;
    fn fails(&self) -> Result<String, String>;
    fn fine(&self, text: &str) -> Result<String, PluginError>;
}

fn main() {}
