//! A Rust plugin library as bytes, before it is mapped: its architecture, the plugins it exports
//! and their descriptors' headers, all read from the file (no plugin code runs).

use std::path::Path;

use fidius_core::abi::{DescriptorHeader, ABI_VERSION, HEADER_LEN, MAGIC, SYMBOL_PREFIX};
use fidius_core::interface::OwnedInterfaceDescriptor;
use object::{Object, ObjectSection, ObjectSymbol};
use sha2::{Digest, Sha256};

use super::LibraryProblem;

/// The largest library a host reads.
pub(crate) const MAX_LIBRARY_BYTES: u64 = 512 << 20;

/// One exported plugin: its symbol and what its header says.
#[derive(Debug, Clone)]
pub(crate) struct ExportedPlugin {
    pub(crate) symbol: String,
    pub(crate) header: DescriptorHeader,
}

/// A library file's bytes, read once: what is verified, inspected and mapped are these bytes.
pub(crate) struct LibraryBytes {
    pub(crate) bytes: Vec<u8>,
}

impl LibraryBytes {
    /// Reads `path` (a regular file, at most [`MAX_LIBRARY_BYTES`]).
    pub(crate) fn read(path: &Path) -> Result<Self, LibraryProblem> {
        fidius_core::fs::read_regular_file(path, MAX_LIBRARY_BYTES)
            .map(|bytes| Self { bytes })
            .map_err(|error| LibraryProblem::Unreadable {
                reason: error.to_string(),
            })
    }

    pub(crate) fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }

    /// The plugins the library exports, after checking that it is a shared library for this
    /// host's architecture.
    pub(crate) fn exported_plugins(&self) -> Result<Vec<ExportedPlugin>, LibraryProblem> {
        let file =
            object::File::parse(&*self.bytes).map_err(|error| LibraryProblem::NotALibrary {
                reason: error.to_string(),
            })?;
        check_architecture(&file)?;
        let mut plugins = Vec::new();
        for symbol in file.dynamic_symbols() {
            let Ok(name) = symbol.name() else { continue };
            if !name.starts_with(SYMBOL_PREFIX) || !symbol.is_definition() {
                continue;
            }
            let header = symbol
                .section_index()
                .and_then(|index| file.section_by_index(index).ok())
                .and_then(|section| {
                    section
                        .data_range(symbol.address(), HEADER_LEN as u64)
                        .ok()
                        .flatten()
                })
                .and_then(DescriptorHeader::read)
                .ok_or_else(|| LibraryProblem::UnreadableDescriptor {
                    symbol: name.to_owned(),
                })?;
            plugins.push(ExportedPlugin {
                symbol: name.to_owned(),
                header,
            });
        }
        Ok(plugins)
    }
}

fn check_architecture(file: &object::File<'_>) -> Result<(), LibraryProblem> {
    if file.format() != object::BinaryFormat::Elf || file.kind() != object::ObjectKind::Dynamic {
        return Err(LibraryProblem::NotALibrary {
            reason: format!(
                "a {:?} {:?} file, not an ELF shared library",
                file.format(),
                file.kind()
            ),
        });
    }
    let expected = host_architecture();
    let found = file.architecture();
    let same_width = file.is_64() == cfg!(target_pointer_width = "64");
    let same_order = file.is_little_endian() == cfg!(target_endian = "little");
    if Some(found) != expected || !same_width || !same_order {
        return Err(LibraryProblem::WrongArchitecture {
            found: format!("{found:?}"),
            expected: std::env::consts::ARCH.to_owned(),
        });
    }
    Ok(())
}

fn host_architecture() -> Option<object::Architecture> {
    use object::Architecture;
    match std::env::consts::ARCH {
        "x86_64" => Some(Architecture::X86_64),
        "aarch64" => Some(Architecture::Aarch64),
        "x86" => Some(Architecture::I386),
        "arm" => Some(Architecture::Arm),
        "riscv64" => Some(Architecture::Riscv64),
        "powerpc64" => Some(Architecture::PowerPc64),
        "s390x" => Some(Architecture::S390x),
        "loongarch64" => Some(Architecture::LoongArch64),
        _ => None,
    }
}

/// Picks the plugin to load from `plugins`: the one named `wanted`, or else the one implementing
/// `descriptor`'s interface; then checks its header against `descriptor`.
pub(crate) fn choose<'a>(
    plugins: &'a [ExportedPlugin],
    wanted: Option<&str>,
    descriptor: &OwnedInterfaceDescriptor,
) -> Result<&'a ExportedPlugin, LibraryProblem> {
    let names = || {
        plugins
            .iter()
            .map(|plugin| plugin.header.plugin_name.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let candidates: Vec<&ExportedPlugin> = match wanted {
        Some(wanted) => plugins
            .iter()
            .filter(|plugin| plugin.header.plugin_name.as_deref() == Some(wanted))
            .collect(),
        None => plugins
            .iter()
            .filter(|plugin| {
                plugin.header.interface_name.as_deref() == Some(descriptor.trait_name.as_str())
            })
            .collect(),
    };
    let chosen = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Err(LibraryProblem::NoSuchPlugin {
                wanted: wanted.map_or_else(
                    || format!("a plugin of `{}`", descriptor.trait_name),
                    |name| format!("plugin `{name}`"),
                ),
                available: names(),
            })
        }
        _ => {
            return Err(LibraryProblem::AmbiguousPlugin {
                interface: descriptor.trait_name.clone(),
                available: names(),
            })
        }
    };
    check_header(&chosen.header, descriptor)?;
    Ok(chosen)
}

/// The checks of a descriptor's header: magic, ABI version, interface name, version and hash.
pub(crate) fn check_header(
    header: &DescriptorHeader,
    descriptor: &OwnedInterfaceDescriptor,
) -> Result<(), LibraryProblem> {
    if header.magic != MAGIC {
        return Err(LibraryProblem::BadMagic);
    }
    if header.abi_version != ABI_VERSION {
        return Err(LibraryProblem::AbiVersion {
            found: header.abi_version,
            expected: ABI_VERSION,
        });
    }
    let interface = header.interface_name.clone().unwrap_or_default();
    if interface != descriptor.trait_name {
        return Err(LibraryProblem::InterfaceName {
            found: interface,
            expected: descriptor.trait_name.clone(),
        });
    }
    if header.interface_version != descriptor.version {
        return Err(LibraryProblem::InterfaceVersion {
            interface,
            found: header.interface_version,
            expected: descriptor.version,
        });
    }
    if header.interface_hash != descriptor.interface_hash {
        return Err(LibraryProblem::InterfaceHash {
            interface,
            found: header.interface_hash,
            expected: descriptor.interface_hash,
        });
    }
    Ok(())
}
