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

#[test]
fn demo_renders_the_sample_on_a_local_farm_and_says_where() {
    let data = tempfile::tempdir().unwrap();
    // Ports 0: never collide with a demo someone is running.
    let run = tessera()
        .args(["demo", "--exit", "--frames", "1-2", "--width", "64", "--spp", "2", "--workers", "2"])
        .args(["--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .current_dir(data.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let value = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"))
            .trim()
    };
    let frames = std::path::PathBuf::from(value("frames:"));
    for f in [1, 2] {
        for ext in ["png", "exr"] {
            assert!(
                frames.join(format!("turntable-{f:04}.{ext}")).is_file(),
                "frame {f} {ext} in {}",
                frames.display()
            );
        }
    }
    assert!(value("web:").starts_with("http://127.0.0.1:"), "{stdout}");
    assert!(value("token:").starts_with("ta_"), "{stdout}");
    assert!(stdout.contains("rendered 2 frames"), "{stdout}");
}
