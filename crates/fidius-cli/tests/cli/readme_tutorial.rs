//! The README's tutorial, followed literally: every block marked `<!-- tutorial: PATH -->` is
//! written to PATH, every block marked `<!-- tutorial: run -->` runs (bash, in order, with the
//! built `fidius` first on PATH), and the block marked `<!-- tutorial: output -->` must be exactly
//! what the command block before it printed. All of it in a temporary folder outside the
//! workspace; the crates' `fidius = "0.1"` requirements resolve to this checkout through a
//! `[patch.crates-io]` in that folder's `.cargo/config.toml`, the one thing the test adds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::scaffold::{assert_succeeded, build_python, checkout, clear_cargo_env, shared_target};
use crate::support::TestResult;

const README: &str = include_str!("../../../../README.md");
const MARKER: &str = "<!-- tutorial: ";

#[derive(Debug)]
enum Step {
    File { path: String, contents: String },
    Run(String),
    Output(String),
}

/// The marked blocks of `markdown`, in order. A marker must be followed by a fenced block.
fn tutorial_steps(markdown: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let Some(what) = line
            .trim()
            .strip_prefix(MARKER)
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().map(|(_, line)| line).unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "README.md line {}: `{line}` is not followed by a code block",
            number + 1
        );
        let mut contents = String::new();
        for (_, line) in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            contents.push_str(line);
            contents.push('\n');
        }
        steps.push(match what {
            "run" => Step::Run(contents),
            "output" => Step::Output(contents),
            path => Step::File {
                path: path.to_owned(),
                contents,
            },
        });
    }
    steps
}

/// bash running one command block in `root` as a user would, with the built `fidius` on PATH,
/// cargo offline and sharing the outside-workspace target folder, and the cache under `root`.
fn shell(root: &Path, script: &str) -> Command {
    let fidius = Path::new(env!("CARGO_BIN_EXE_fidius"));
    let mut path = vec![fidius.parent().expect("the binary's folder").to_path_buf()];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(root);
    clear_cargo_env(&mut command);
    command
        .env("PATH", std::env::join_paths(path).expect("PATH"))
        .env("HOME", root.join("home"))
        .env("CARGO_TARGET_DIR", shared_target())
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("FIDIUS_LOG")
        .env_remove("LD_LIBRARY_PATH");
    if let Some(python) = build_python() {
        command
            .env("PYO3_PYTHON", &python)
            .env("FIDIUS_PYTHON", python);
    }
    command
}

#[test]
fn the_readme_tutorial_followed_literally_works_end_to_end() -> TestResult {
    let steps = tutorial_steps(README);
    let files: Vec<&str> = steps
        .iter()
        .filter_map(|step| match step {
            Step::File { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    for needed in [
        "my-interface/Cargo.toml",
        "my-interface/src/lib.rs",
        "my-greeter-py/greeter.py",
        "my-greeter-py/package.toml",
        "my-host/Cargo.toml",
        "my-host/build.rs",
        "my-host/src/main.rs",
    ] {
        assert!(files.contains(&needed), "README's tutorial lacks {needed}");
    }
    assert!(
        steps.iter().any(|step| matches!(step, Step::Output(_))),
        "README's tutorial shows no host output"
    );

    let scratch = tempfile::tempdir()?;
    let root = scratch.path();
    let crates = checkout().join("crates");
    let patch = format!(
        "[patch.crates-io]\nfidius = {{ path = {:?} }}\nfidius-build = {{ path = {:?} }}\n",
        crates.join("fidius"),
        crates.join("fidius-build"),
    );
    fs::create_dir_all(root.join(".cargo"))?;
    fs::write(root.join(".cargo/config.toml"), patch)?;

    let mut last_stdout: Option<String> = None;
    for step in &steps {
        match step {
            Step::File { path, contents } => {
                let target: PathBuf = root.join(path);
                fs::create_dir_all(target.parent().ok_or("a file path")?)?;
                fs::write(&target, contents)?;
                if path.ends_with("/Cargo.toml") {
                    // The checkout's resolved versions, so `--offline` resolves.
                    let lock = target.with_file_name("Cargo.lock");
                    fs::copy(checkout().join("Cargo.lock"), lock)?;
                }
            }
            Step::Run(script) => {
                let output = shell(root, script).output()?;
                assert_succeeded(&format!("the tutorial's commands\n{script}"), &output);
                last_stdout = Some(String::from_utf8_lossy(&output.stdout).into_owned());
            }
            Step::Output(expected) => {
                let printed = last_stdout
                    .as_deref()
                    .ok_or("output shown before any command")?;
                assert_eq!(
                    printed, expected,
                    "the host printed something else than README.md says"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn markers_are_read_in_order_and_a_changed_block_is_seen() {
    let markdown = "text\n<!-- tutorial: a/b.txt -->\n```toml\nx = 1\n```\n\
                    <!-- tutorial: run -->\n```sh\necho hi\n```\n\
                    <!-- tutorial: output -->\n```\nhi\n```\n";
    let steps = tutorial_steps(markdown);
    assert!(
        matches!(&steps[..], [Step::File { path, contents }, Step::Run(run), Step::Output(out)]
            if path == "a/b.txt" && contents == "x = 1\n" && run == "echo hi\n" && out == "hi\n"),
        "{steps:?}"
    );
}
