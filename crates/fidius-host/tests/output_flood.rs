//! A plugin printing gigabytes costs the host a bounded amount of memory, in both tiers. Its own
//! test binary: with no other test running in the process, its resident size is this test's.

mod support;

use fidius_core::manifest::Isolation;
use fidius_host::{LoadOptions, PluginCall, PythonPluginHandle, WorkerCommand};
use serde_json::json;

use support::{RETURN, TRANSFORM};

/// How far the host's peak resident size may rise over its size before the floods. Each flood
/// writes 2 GB; before lines were capped the host's resident size grew by about 4 GiB. In the
/// sub-interpreter tier the plugin's own 50 MB strings are in the host process, hence not less.
const RSS_BOUND: u64 = 300 << 20;

/// `VmRSS` or `VmHWM` (peak) of this process, from /proc/self/status, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line
        .trim_start_matches(field)
        .trim_start_matches(':')
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number of kB");
    kib * 1024
}

fn run(handle: &PythonPluginHandle, code: &str) {
    let expression = format!("exec({code:?}, globals())");
    handle
        .call_typed_json(RETURN, json!([expression]).to_string().as_bytes())
        .unwrap_or_else(|error| panic!("{code}: {error}"));
}

#[test]
fn a_plugin_printing_2_gb_leaves_host_memory_bounded_in_both_tiers() {
    let root = tempfile::tempdir().expect("tempdir");
    let process = LoadOptions::default()
        .isolation(Isolation::Process)
        .worker_command(WorkerCommand::new(env!("CARGO_BIN_EXE_fidius-worker")));
    let sub = LoadOptions::default().isolation(Isolation::Subinterpreter);
    let bystander = support::start_tester(root.path(), "bystander", "1.0", 2, 1);
    let before = status_bytes("VmRSS");
    for (name, options, floods) in [
        (
            "flood-sub",
            &sub,
            &["for _ in range(40): print('q' * 50_000_000)"][..],
        ),
        (
            "flood-proc",
            &process,
            &[
                "for _ in range(40): print('q' * 50_000_000)",
                // Straight to file descriptor 1, without a newline: the host's pipe reader.
                "import os\nfor _ in range(40): os.write(1, b'q' * 50_000_000)\nos.write(1, b'\\n')",
            ][..],
        ),
    ] {
        let dir = support::tester_plugin(root.path(), name, "1.0", 2);
        let handle = support::start_with(&dir, name, options);
        for flood in floods {
            run(&handle, flood);
        }
        run(&handle, "print('after the flood')");
        let peak = status_bytes("VmHWM");
        assert!(
            peak < before + RSS_BOUND,
            "{name}: host peak RSS {} MiB, {} MiB before the flood (bound +{} MiB)",
            peak >> 20,
            before >> 20,
            RSS_BOUND >> 20
        );
        // The fd line reaches the host after the call returned: wait for it (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let lines = loop {
            let lines = handle.recent_output();
            let fd_line_in = floods.len() == 1 || lines.iter().any(|line| line.text.contains("bytes of this line dropped"));
            if fd_line_in || std::time::Instant::now() > deadline {
                break lines;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let texts: Vec<String> = lines
            .iter()
            .map(|line| line.text.chars().rev().take(60).collect::<String>().chars().rev().collect())
            .collect();
        assert!(
            lines.iter().all(|line| !line.text.is_empty()),
            "{name}: a spurious empty line: {texts:?}"
        );
        assert!(
            lines.iter().any(|line| line.text == "after the flood"),
            "{name}: {texts:?}"
        );
        let capped = lines
            .iter()
            .find(|line| line.text.starts_with("qqq"))
            .expect("a flood line is kept");
        assert!(
            capped.text.len() < 300 * 1024
                && capped.text.contains("more characters of this line dropped"),
            "{name}: {} bytes, ending {:?}",
            capped.text.len(),
            &capped.text[capped.text.len().saturating_sub(80)..]
        );
        let kept: usize = lines.iter().map(|line| line.text.len()).sum();
        assert!(kept <= 1 << 20, "{name}: recent_output holds {kept} bytes");
        // The flooding plugin and its bystander still answer.
        assert_eq!(handle.call_typed_json(TRANSFORM, b"[1]").map(|_| ()).ok(), Some(()));
        assert_eq!(bystander.call_typed_json(TRANSFORM, b"[1]").map(|_| ()).ok(), Some(()));
        eprintln!(
            "{name}: host RSS {} MiB before, peak {} MiB after",
            before >> 20,
            peak >> 20
        );
    }
}
