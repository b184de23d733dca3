//! `fidius call ... --stream-in FILE`: a streamed argument's items read lazily from JSON lines (a
//! file, or `-` for stdin), one line per item, each read only when the plugin asks for it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

/// The lines of a `--stream-in` source as items, and where a read error went (it ends the items;
/// the command reports it once the call is over).
pub struct StreamIn {
    lines: std::io::Lines<Box<dyn BufRead + Send>>,
    failed: Arc<Mutex<Option<String>>>,
    line: u64,
}

/// Opens `--stream-in`: `-` is stdin.
pub fn open(path: &Path) -> anyhow::Result<(StreamIn, Arc<Mutex<Option<String>>>)> {
    let reader: Box<dyn BufRead + Send> = if path == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = File::open(path)
            .with_context(|| format!("cannot read --stream-in {}", path.display()))?;
        Box::new(BufReader::new(file))
    };
    let failed = Arc::new(Mutex::new(None));
    Ok((
        StreamIn {
            lines: reader.lines(),
            failed: Arc::clone(&failed),
            line: 0,
        },
        failed,
    ))
}

impl Iterator for StreamIn {
    type Item = Vec<u8>;

    /// The next line as it is: the host checks it against the argument's item type, and refuses it
    /// naming its number (the line number).
    fn next(&mut self) -> Option<Vec<u8>> {
        match self.lines.next()? {
            Ok(line) => {
                self.line += 1;
                Some(line.into_bytes())
            }
            Err(error) => {
                let mut failed = self
                    .failed
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                *failed = Some(format!(
                    "cannot read --stream-in after line {}: {error}",
                    self.line
                ));
                None
            }
        }
    }
}

/// The read error that ended the items early, if one did.
pub fn read_error(failed: &Mutex<Option<String>>) -> Option<String> {
    failed
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
}
