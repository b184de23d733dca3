//! Pack then unpack reproduces the tree; packing twice gives the same bytes.

use std::fs;
use std::path::{Path, PathBuf};

use fidius_core::archive::{
    pack_dir, unpack, PackedArchive, SignaturePolicy, UnpackLimits, UnpackedPackage,
};
use fidius_core::tree::EXCLUDED_DIRS;
use proptest::prelude::*;

use crate::support::{snapshot, write_package, TestResult};

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9_. -]{0,11}".prop_filter("names the archive leaves out", |name| {
        !EXCLUDED_DIRS.contains(&name.as_str())
            && !name.ends_with(".pyc")
            && !name.ends_with(".sig")
    })
}

#[derive(Debug, Clone)]
struct Node {
    path: Vec<String>,
    /// `None` makes an (empty) directory.
    content: Option<Vec<u8>>,
    executable: bool,
}

fn node() -> impl Strategy<Value = Node> {
    let content = prop_oneof![
        1 => Just(None),
        2 => Just(Some(Vec::new())),
        6 => proptest::collection::vec(any::<u8>(), 1..3000).prop_map(Some),
        1 => (1usize..200_000).prop_map(|len| Some(vec![b'x'; len])),
    ];
    (
        proptest::collection::vec(segment(), 1..5),
        content,
        any::<bool>(),
    )
        .prop_map(|(path, content, executable)| Node {
            path,
            content,
            executable,
        })
}

/// Writes the nodes that fit (a file may not sit where an earlier node needs a directory).
fn write_nodes(root: &Path, nodes: &[Node]) {
    for node in nodes {
        let path: PathBuf = node.path.iter().fold(root.to_path_buf(), |p, s| p.join(s));
        let Some(parent) = path.parent() else {
            continue;
        };
        if fs::create_dir_all(parent).is_err() || path.exists() {
            continue;
        }
        match &node.content {
            None => fs::create_dir(&path).expect("create directory"),
            Some(content) => {
                fs::write(&path, content).expect("write file");
                #[cfg(unix)]
                if node.executable {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
                }
            }
        }
    }
}

fn pack_and_unpack(nodes: &[Node]) -> TestResult {
    let work = tempfile::tempdir()?;
    let package = write_package(work.path(), &[])?;
    write_nodes(&package, nodes);
    let first = pack_dir(
        &package,
        &work.path().join("out1"),
        SignaturePolicy::RefuseNewerFiles,
    )?;
    let second = pack_dir(
        &package,
        &work.path().join("out2"),
        SignaturePolicy::RefuseNewerFiles,
    )?;
    assert_eq!(first.digest, second.digest);
    assert!(
        fs::read(&first.path)? == fs::read(&second.path)?,
        "archives differ"
    );
    assert_eq!(
        first.path.file_name().and_then(|n| n.to_str()),
        Some("my-greeter-0.1.0.fid")
    );

    let dest = work.path().join("dest");
    let unpacked = unpack(
        fs::File::open(&first.path)?,
        &dest,
        &UnpackLimits::default(),
    )?;
    assert_eq!(&unpacked.top_dir, "my-greeter-0.1.0");
    assert_eq!(snapshot(&package), snapshot(&unpacked.root));
    let leftovers: Vec<_> = fs::read_dir(&dest)?.collect();
    assert_eq!(leftovers.len(), 1, "staging directory left behind");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pack_unpack_reproduces_random_trees(nodes in proptest::collection::vec(node(), 0..24)) {
        pack_and_unpack(&nodes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

/// Packs `package` unsigned into `work` and unpacks the archive into `work/dest`.
fn pack_then_unpack(
    package: &Path,
    work: &Path,
) -> Result<(PackedArchive, UnpackedPackage), Box<dyn std::error::Error>> {
    let packed = pack_dir(package, work, SignaturePolicy::RefuseNewerFiles)?;
    let unpacked = unpack(
        fs::File::open(&packed.path)?,
        &work.join("dest"),
        &UnpackLimits::default(),
    )?;
    Ok((packed, unpacked))
}

#[test]
fn excluded_files_stay_out_of_the_archive() -> TestResult {
    let work = tempfile::tempdir()?;
    let package = write_package(
        work.path(),
        &[
            ("__pycache__/greeter.cpython-313.pyc", b"bytecode"),
            ("target/debug/junk", b"junk"),
            (".git/HEAD", b"ref"),
            ("stray.pyc", b"bytecode"),
            ("notes.sig", b"unsigned"),
        ],
    )?;
    let (packed, unpacked) = pack_then_unpack(&package, work.path())?;
    let names: Vec<String> = snapshot(&unpacked.root).into_keys().collect();
    assert_eq!(names, ["greeter.py", "package.toml"]);
    assert!(!packed.signed);
    Ok(())
}

#[test]
fn archives_are_written_with_fixed_metadata() -> TestResult {
    let work = tempfile::tempdir()?;
    let package = write_package(work.path(), &[("data/a.txt", b"a")])?;
    let packed = pack_dir(&package, work.path(), SignaturePolicy::RefuseNewerFiles)?;
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(&packed.path)?));
    let mut paths = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let header = entry.header();
        assert_eq!((header.mtime()?, header.uid()?, header.gid()?), (0, 0, 0));
        paths.push(entry.path()?.to_string_lossy().into_owned());
    }
    assert_eq!(
        paths,
        [
            "my-greeter-0.1.0",
            "my-greeter-0.1.0/data",
            "my-greeter-0.1.0/data/a.txt",
            "my-greeter-0.1.0/greeter.py",
            "my-greeter-0.1.0/package.toml",
        ]
    );
    Ok(())
}

#[test]
fn paths_longer_than_a_tar_header_round_trip() -> TestResult {
    let work = tempfile::tempdir()?;
    let deep = format!(
        "{}/{}.py",
        ["segment_of_twenty_ch"; 6].join("/"),
        "m".repeat(90)
    );
    let package = write_package(work.path(), &[(deep.as_str(), b"x = 1\n")])?;
    let (_, unpacked) = pack_then_unpack(&package, work.path())?;
    assert_eq!(fs::read(unpacked.root.join(&deep))?, b"x = 1\n");
    assert_eq!(snapshot(&package), snapshot(&unpacked.root));
    Ok(())
}
