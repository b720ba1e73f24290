//! The `tessera` binary, run as a user runs it.

use std::process::Command;

use crate::guest;

fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

#[test]
fn demo_writes_a_frame_and_says_where() {
    guest("spheres");
    let module = tessera_guest_build::components_dir().join("spheres.wasm");
    let out = tempfile::tempdir().unwrap();
    let run = tessera()
        .args(["local-demo", "--width", "48", "--height", "20", "--spp", "2", "--tile-size", "16", "--frame", "7"])
        .arg("--module")
        .arg(&module)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let path = out.path().join("frame-0007.png");
    assert!(stdout.contains(&format!("frame written to {}", path.canonicalize().unwrap().display())), "{stdout}");
    let img = image::open(&path).unwrap();
    assert_eq!((img.width(), img.height()), (48, 20));
}

#[test]
fn demo_with_a_missing_module_says_how_to_build_it() {
    let run = tessera().args(["local-demo", "--module", "/nonexistent/job.wasm"]).output().unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("/nonexistent/job.wasm") && stderr.contains("cargo xtask build-guests"), "{stderr}");
}

#[test]
fn demo_with_a_bad_module_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("scene.glb");
    std::fs::write(&bogus, b"glTF not a job").unwrap();
    let run = tessera().arg("local-demo").arg("--module").arg(&bogus).output().unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("not a WebAssembly module"), "{stderr}");
}
