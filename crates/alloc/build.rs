// Debian: libgoogle-perftools-dev (libtcmalloc_minimal.so).
fn main() {
    println!("cargo:rustc-link-lib=dylib=tcmalloc_minimal");
}
