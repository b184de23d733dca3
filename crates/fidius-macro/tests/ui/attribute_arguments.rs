use fidius_macro::plugin_interface;

#[plugin_interface]
pub trait NoVersion {
    fn ping(&self) -> String;
}

#[plugin_interface(version = 1, version = 2, colour = "blue", buffer = "Arena")]
pub trait BadArguments {
    fn ping(&self) -> String;
}

#[plugin_interface(version = -1)]
pub trait NegativeVersion {
    fn ping(&self) -> String;
}

fn main() {}
