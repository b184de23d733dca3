//! `fidius cache …`: the package cache where hosts unpack `.fid` archives.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use fidius_host::{CachedPackage, PackageCache, PruneRule};

use super::units::{format_age, format_size, parse_duration, parse_size};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    List(ListCommand),
    Prune(PruneCommand),
}

impl CacheCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            CacheCommand::List(command) => command.execute(),
            CacheCommand::Prune(command) => command.execute(),
        }
    }
}

/// The cache folder: `--cache-dir`, or the hosts' default.
#[derive(Debug, Args)]
struct CacheDir {
    /// The cache folder [default: $XDG_CACHE_HOME/fidius/packages, else
    /// ~/.cache/fidius/packages, else fidius-UID/packages in the temp folder].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

impl CacheDir {
    fn open(&self) -> PackageCache {
        match &self.cache_dir {
            Some(dir) => PackageCache::at(dir),
            None => PackageCache::default_location(),
        }
    }
}

/// List the unpacked packages in the cache, least recently used first: size, when a host last
/// used it, whether a running host has it loaded, NAME-VERSION and the archive hash.
#[derive(Debug, Args)]
pub struct ListCommand {
    #[command(flatten)]
    cache: CacheDir,
}

impl ListCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let cache = self.cache.open();
        let slots = cache
            .list()
            .with_context(|| format!("cannot list the cache {}", cache.dir().display()))?;
        let total: u64 = slots.iter().map(|slot| slot.bytes).sum();
        println!(
            "{}: {} package(s), {}",
            cache.dir().display(),
            slots.len(),
            format_size(total)
        );
        for slot in &slots {
            println!("{}", row(slot));
        }
        println!(
            "compiled plugin modules (bytecode cache, pruned with the packages): {}",
            format_size(cache.bytecode_bytes())
        );
        Ok(())
    }
}

/// Remove unpacked packages from the cache (they are unpacked again when next loaded). Least
/// recently used go first; a package a running host has loaded is never removed. Without
/// --max-size or --older-than, every package not in use is removed.
#[derive(Debug, Args)]
pub struct PruneCommand {
    #[command(flatten)]
    cache: CacheDir,

    /// Remove packages until the cache holds at most this much (e.g. 500M, 2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,

    /// Remove packages not used for this long (e.g. 12h, 7d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    older_than: Option<Duration>,
}

impl PruneCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let cache = self.cache.open();
        let rule = match (self.max_size, self.older_than) {
            (None, None) => PruneRule {
                max_bytes: Some(0),
                older_than: None,
            },
            (max_bytes, older_than) => PruneRule {
                max_bytes,
                older_than,
            },
        };
        let removed = cache
            .prune(&rule)
            .with_context(|| format!("cannot prune the cache {}", cache.dir().display()))?;
        for slot in &removed {
            println!("removed {}", row(slot));
        }
        let freed: u64 = removed.iter().map(|slot| slot.bytes).sum();
        println!(
            "removed {} package(s), {} freed",
            removed.len(),
            format_size(freed)
        );
        Ok(())
    }
}

fn row(slot: &CachedPackage) -> String {
    let age = SystemTime::now()
        .duration_since(slot.last_used)
        .unwrap_or_default();
    let hash = slot
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "{:>10}  {:>4} ago  {:6}  {}  {}",
        format_size(slot.bytes),
        format_age(age),
        if slot.in_use { "in use" } else { "" },
        slot.package.as_deref().unwrap_or("(no record)"),
        hash.get(..16).unwrap_or(&hash),
    )
}
