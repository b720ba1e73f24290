//! Builds the sample jobs (the path tracer and the spheres demo) from source
//! and embeds them in the `tessera` binary, so `tessera render` and
//! `tessera demo` work from any directory with nothing else installed.
//!
//! Without a wasm toolchain the build still succeeds, with a warning: the
//! binary then needs `--module`. `TESSERA_SKIP_EMBED=1` skips the step.

use std::path::Path;

const EMBEDDED: &[(&str, &str)] = &[("pathtracer", "TESSERA_PATHTRACER_WASM"), ("spheres", "TESSERA_SPHERES_WASM")];

fn main() {
    println!("cargo:rustc-check-cfg=cfg(tessera_embedded)");
    println!("cargo:rerun-if-env-changed=TESSERA_GUEST_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=TESSERA_SKIP_EMBED");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["samples/pathtracer", "samples/spheres", "guest-sdk/src", "guest-sdk/wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    if std::env::var_os("TESSERA_SKIP_EMBED").is_some_and(|v| v == "1") {
        println!("cargo:warning=TESSERA_SKIP_EMBED=1: sample jobs not embedded; `tessera render` needs --module");
        return;
    }
    let toolchain = match tessera_guest_build::detect_toolchain() {
        Ok(t) => t,
        Err(e) => {
            println!("cargo:warning=sample jobs not embedded ({e}); `tessera render` will need --module");
            return;
        }
    };
    for (guest, var) in EMBEDDED {
        match tessera_guest_build::build(guest, toolchain, false) {
            Ok(path) => println!("cargo:rustc-env={var}={}", path.display()),
            Err(e) => panic!("building the embedded guest {guest}: {e}"),
        }
    }
    println!("cargo:rustc-cfg=tessera_embedded");
}
