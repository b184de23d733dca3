//! `fidius` embeds libpython (through fidius-ffi, for `fidius call`): record its folder as rpath so
//! it runs without LD_LIBRARY_PATH, and that interpreter as `FIDIUS_BUILD_PYTHON`, so `fidius pack`
//! vendors with the same Python the host embeds (see `fidius_build::link_python`).
fn main() {
    fidius_build::link_python();
}
