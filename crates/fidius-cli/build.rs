//! `fidius` embeds libpython (through fidius-host, for `fidius call` and `fidius worker`): record
//! its folder as rpath so it runs without LD_LIBRARY_PATH, and that interpreter as
//! `FIDIUS_BUILD_PYTHON`, so `fidius pack` vendors with the same Python the host embeds. The one
//! implementation is `fidius_build::link_python`, as in every host crate's build script.
fn main() {
    fidius_build::link_python();
}
