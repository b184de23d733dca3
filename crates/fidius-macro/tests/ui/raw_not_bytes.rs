use fidius_macro::plugin_interface;

#[plugin_interface(version = 1)]
pub trait RawShapes {
    #[wire(raw)]
    fn text(&self, data: String) -> Vec<u8>;
    #[wire(raw)]
    fn two_inputs(&self, a: Vec<u8>, b: Vec<u8>) -> Vec<u8>;
    #[wire(raw)]
    fn no_output(&self, data: Vec<u8>);
    #[wire(base64)]
    fn unknown_mode(&self, data: Vec<u8>) -> Vec<u8>;
}

fn main() {}
