//! Integration tests for fidius-core: one binary, a module per feature.

mod hash_properties;
mod hash_vectors;
mod hostile;
mod interop;
mod round_trip;
mod schema_fingerprint;
mod support;
mod tamper;
mod trust;
