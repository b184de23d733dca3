//! A minimal fidius host: finds the plugins in a folder, loads those implementing `Greeter` and
//! calls each through the typed client.
//!
//! ```sh
//! cargo run -p fidius --features host --example minimal_host -- PLUGINS_DIR
//! ```
//!
//! A real host keeps the trait in its own interface crate (`fidius init-interface`), so plugin
//! authors can generate their stub from it; here it is inline to keep the example in one file.
//! Its build script is this package's, which calls `fidius_build::link_python()`.
#![forbid(unsafe_code)]

use std::error::Error;
use std::path::PathBuf;

use fidius::host::{LoadOptions, PluginHost};
use fidius::plugin_interface;

#[plugin_interface(version = 1)]
pub trait Greeter {
    /// Greets someone by name.
    fn greet(&self, name: String) -> String;
}

fn main() -> Result<(), Box<dyn Error>> {
    let plugins = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("plugins"), PathBuf::from);
    let host = PluginHost::builder().search_path(&plugins).build()?;
    let discovery = host.discover()?;
    for broken in &discovery.broken {
        eprintln!("skipped {}: {}", broken.path.display(), broken.error);
    }
    let descriptor = &__fidius_Greeter::Greeter_PYTHON_DESCRIPTOR;
    let greeters = discovery
        .plugins
        .iter()
        .filter(|plugin| plugin.interface() == descriptor.trait_name);
    for plugin in greeters {
        let handle = host.load_python_with(plugin.name(), descriptor, LoadOptions::default())?;
        let greeter = GreeterClient(handle);
        println!("{}: {}", plugin.name(), greeter.greet("World".to_owned())?);
    }
    Ok(())
}
