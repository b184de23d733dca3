//! Misuse of `#[plugin_interface]` fails to compile with an error at the offending tokens.
//! Expected output lives in `tests/ui/*.stderr`; after an intended change to a message,
//! re-bless with `TRYBUILD=overwrite cargo test -p fidius-macro --test compile_fail` and review
//! the diff.

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
