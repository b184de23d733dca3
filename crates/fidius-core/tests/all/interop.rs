//! Archives laid out like the original fidius tool's (tar + bzip2, `NAME-VERSION/…`, a
//! `package.sig` over the same digest) unpack and verify. The digest is computed here from
//! the written specification, independently of the library.

use std::io::Write;

use ed25519_dalek::Signer;
use fidius_core::archive::{unpack, verify_archive, UnpackLimits};
use fidius_core::digest::PackageDigest;
use fidius_core::signing::{generate_signing_key, KeyFingerprint};
use sha2::{Digest, Sha256};

use crate::support::{TestResult, MANIFEST};

fn spec_digest(files: &[(&str, &[u8])]) -> [u8; 32] {
    let mut sorted = files.to_vec();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut hasher = Sha256::new();
    for (path, content) in sorted {
        hasher.update((path.len() as u64).to_le_bytes());
        hasher.update(path.as_bytes());
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(content);
    }
    hasher.finalize().into()
}

#[test]
fn original_tool_archive_unpacks_and_verifies() -> TestResult {
    let files: &[(&str, &[u8])] = &[
        ("package.toml", MANIFEST.as_bytes()),
        ("greeter.py", b"def greet(name):\n    return name\n"),
        ("vendor/six.py", b"# six\n"),
        ("Z_upper_sorts_first.txt", b"Z"),
    ];
    let key = generate_signing_key();
    let signature = key.sign(&spec_digest(files));

    // Unsorted entries, real-looking owners and times, ustar headers, no directory entries.
    let mut builder = tar::Builder::new(Vec::new());
    let mut entries: Vec<(&str, &[u8])> = files.to_vec();
    let signature_bytes = signature.to_bytes();
    entries.push(("package.sig", &signature_bytes));
    for (path, content) in entries.iter().rev() {
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o664);
        header.set_mtime(1_767_225_600);
        header.set_uid(1000);
        header.set_gid(1000);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, format!("my-greeter-0.1.0/{path}"), *content)?;
    }
    let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    encoder.write_all(&builder.into_inner()?)?;
    let archive_bytes = encoder.finish()?;
    assert!(archive_bytes.starts_with(b"BZh"));

    let work = tempfile::tempdir()?;
    let archive = work.path().join("my-greeter-0.1.0.fid");
    std::fs::write(&archive, &archive_bytes)?;
    let verified = verify_archive(&archive, &[key.verifying_key()], &UnpackLimits::default())?;
    assert_eq!(verified.key, KeyFingerprint::of(&key.verifying_key()));
    assert_eq!(verified.digest.0, spec_digest(files));

    let unpacked = unpack(
        archive_bytes.as_slice(),
        &work.path().join("dest"),
        &UnpackLimits::default(),
    )?;
    assert_eq!(
        std::fs::read(unpacked.root.join("vendor/six.py"))?,
        b"# six\n"
    );
    assert_eq!(PackageDigest::of_dir(&unpacked.root)?.0, spec_digest(files));
    Ok(())
}
