//! With feature `host`: hand fidius-ffi's libpython folder on to host crates (`links = "fidius"`
//! makes it `DEP_FIDIUS_RPATH` in their build scripts), and record it as the rpath of this
//! package's own examples and tests. Without it there is nothing to forward.
fn main() {
    fidius_build::forward_python_metadata();
    if std::env::var_os("CARGO_FEATURE_HOST").is_some() {
        fidius_build::link_python();
    }
}
