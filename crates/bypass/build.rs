//! Compiles the BPF programs in `bpf/` with clang into `$OUT_DIR/bypass.o`, which the
//! loader embeds. The object is target-independent BPF bytecode; only the kernel
//! headers' location depends on the host.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let source = Path::new("bpf/bypass.c");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("bypass.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());

    for (header, package) in [
        ("/usr/include/bpf/bpf_helpers.h", "libbpf-dev"),
        ("/usr/include/linux/bpf.h", "linux-libc-dev"),
    ] {
        if !Path::new(header).exists() {
            fail(&format!(
                "{header} is missing; install the Debian package {package} (./run installs it)"
            ));
        }
    }
    // linux/types.h includes asm/types.h, which Debian keeps under the multiarch triple.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");

    let result = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(&out)
        .output();
    match result {
        Ok(o) if o.status.success() => {}
        Ok(o) => fail(&format!(
            "{clang} could not compile {}:\n{}",
            source.display(),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => fail(&format!(
            "cannot run {clang} ({e}); the eBPF programs are compiled with clang -target bpf: \
             install the Debian packages clang and libbpf-dev (./run installs them), or set \
             CLANG to a clang binary"
        )),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: trellis-bypass: {message}");
    std::process::exit(1);
}
