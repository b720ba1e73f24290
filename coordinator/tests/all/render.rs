//! `tessera render` and the path tracer through the sandbox: real wasm,
//! real scenes, real files.

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_coordinator::local::{render_frame, FrameJob};
use tessera_worker::sandbox::*;

use crate::guest;

fn scenes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/scenes")
}

fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

#[test]
fn wasm_frames_are_identical_across_runs_instances_and_tilings() {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let module = sandbox.load(&guest("pathtracer")).unwrap();
    let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
    let spec = JobSpec::new(scene, JobSettings::new(48, 27));
    let job = |tile_size, threads| FrameJob { frame: 30, tile_size, samples: 2, seed: 5, threads };
    let (a, _) = render_frame(&module, &spec, &job(64, 1), |_, _, _| {}).unwrap();
    let (b, _) = render_frame(&module, &spec, &job(8, 2), |_, _, _| {}).unwrap();
    let (c, _) = render_frame(&module, &spec, &job(13, 3), |_, _, _| {}).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert!(a.color.iter().any(|v| *v > 0.0));
}

#[test]
fn the_wasm_path_tracer_refuses_bad_scenes_with_their_reason() {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let module = sandbox.load(&guest("pathtracer")).unwrap();
    let draco = std::fs::read(scenes().join("turntable-draco.gltf")).unwrap();
    let err = module.instantiate(&JobSpec::new(draco, JobSettings::new(8, 8))).err().expect("refused");
    assert!(
        matches!(&err, SandboxError::Job(GuestJobError::Unsupported(m)) if m.contains("KHR_draco_mesh_compression")),
        "{err}"
    );
    let err =
        module.instantiate(&JobSpec::new(b"not a scene".to_vec(), JobSettings::new(8, 8))).err().expect("refused");
    assert!(matches!(&err, SandboxError::Job(GuestJobError::InvalidScene(_))), "{err}");
}

#[test]
fn render_writes_png_and_exr_per_frame() {
    let out = tempfile::tempdir().unwrap();
    let run = tessera()
        .arg("render")
        .arg(scenes().join("turntable.glb"))
        .args(["--frames", "3,5-6", "--spp", "2", "--width", "32", "--height", "18", "--format", "png,exr"])
        .args(["--view", "standard", "--threads", "2"])
        .arg("--module")
        .arg(tessera_guest_build::components_dir().join("pathtracer.wasm"))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("rendered 3 frames of 32x18 at 2 spp"), "{stdout}");
    for f in [3, 5, 6] {
        let png = image::open(out.path().join(format!("turntable-{f:04}.png"))).unwrap();
        assert_eq!((png.width(), png.height()), (32, 18));
        let exr = std::fs::read(out.path().join(format!("turntable-{f:04}.exr"))).unwrap();
        assert_eq!(exr[..4], [0x76, 0x2f, 0x31, 0x01], "OpenEXR magic");
    }
    assert!(!out.path().join("turntable-0004.png").exists());
}

/// Linear RGB of an EXR `tessera render` wrote.
fn exr_pixels(path: &Path) -> Vec<[f32; 3]> {
    use exr::prelude::Vec2;
    let image = exr::prelude::read_first_rgba_layer_from_file(
        path,
        |size, _| (size, vec![[0.0f32; 3]; size.width() * size.height()]),
        |(size, px): &mut (Vec2<usize>, Vec<[f32; 3]>), pos: Vec2<usize>, (r, g, b, _a): (f32, f32, f32, f32)| {
            px[pos.y() * size.width() + pos.x()] = [r, g, b];
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    image.layer_data.channel_data.pixels.1
}

/// relMSE of `x` against `reference` (per channel, +0.01 in the denominator).
fn rel_mse(x: &[[f32; 3]], reference: &[[f32; 3]]) -> f64 {
    let sum: f64 = x
        .iter()
        .zip(reference)
        .flat_map(|(a, r)| (0..3).map(move |c| (f64::from(a[c]), f64::from(r[c]))))
        .map(|(a, r)| (a - r).powi(2) / (r * r + 0.01))
        .sum();
    sum / (3 * x.len()) as f64
}

#[test]
fn render_denoise_writes_both_images_reproducibly_and_leaves_the_raw_frame_alone() {
    let dir = tempfile::tempdir().unwrap();
    let render = |spp: &str, out: &str, denoise: bool| {
        let mut cmd = tessera();
        cmd.arg("render")
            .arg(scenes().join("cornell.gltf"))
            .args(["--frames", "1", "--spp", spp, "--width", "64", "--height", "64", "--format", "png,exr"])
            .args(["--threads", "2", "--out"])
            .arg(dir.path().join(out));
        if denoise {
            cmd.arg("--denoise");
        }
        let run = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
        assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
        stdout
    };
    let stdout = render("8", "a", true);
    assert!(stdout.contains("denoised with tessera-atrous"), "{stdout}");
    render("8", "b", false);
    render("8", "c", true);
    render("256", "reference", false);
    let file = |out: &str, name: &str| std::fs::read(dir.path().join(out).join(name)).unwrap();
    // Rendering the guides changes no raw pixel (the raw EXR gains the guide
    // channels, nothing else), and nothing else is denoised.
    assert!(file("a", "cornell-0001.png") == file("b", "cornell-0001.png"), "the raw PNG changed with --denoise");
    let bits = |p: Vec<[f32; 3]>| p.into_iter().flat_map(|c| c.map(f32::to_bits)).collect::<Vec<_>>();
    let raw_exr = |out: &str| bits(exr_pixels(&dir.path().join(out).join("cornell-0001.exr")));
    assert!(raw_exr("a") == raw_exr("b"), "the raw EXR's pixels changed with --denoise");
    assert!(!dir.path().join("b/cornell-0001.denoised.exr").exists());
    // The raw EXR alone gives the denoised frame back, bit for bit: what
    // `tessera verify` re-derives.
    use tessera_frame::FrameBuffer;
    let again = FrameBuffer::read_exr(&dir.path().join("a/cornell-0001.exr")).unwrap().denoised().unwrap();
    let written = FrameBuffer::read_exr(&dir.path().join("a/cornell-0001.denoised.exr")).unwrap();
    assert!(again.guides.is_none() && written.guides.is_none());
    assert!(
        again.color.iter().map(|c| c.to_bits()).eq(written.color.iter().map(|c| c.to_bits())),
        "the denoised EXR is not the raw EXR denoised"
    );
    // Deterministic: the same render, the same denoised bytes.
    for name in ["cornell-0001.denoised.exr", "cornell-0001.denoised.png"] {
        assert!(file("a", name) == file("c", name), "{name} differs between two runs");
    }
    let reference = exr_pixels(&dir.path().join("reference/cornell-0001.exr"));
    let raw = rel_mse(&exr_pixels(&dir.path().join("a/cornell-0001.exr")), &reference);
    let denoised = rel_mse(&exr_pixels(&dir.path().join("a/cornell-0001.denoised.exr")), &reference);
    println!("cornell 64×64, 8 spp, against 256 spp: relMSE raw {raw:.5}, denoised {denoised:.5}");
    assert!(denoised < raw / 2.0, "denoising did not halve the error: raw {raw}, denoised {denoised}");
}

#[test]
fn render_on_the_gpu_matches_the_cpu_within_tolerance_and_refuses_a_missing_gpu() {
    let render = |engine: &str, gpu: &str, out: &Path| {
        tessera()
            .arg("render")
            .arg(scenes().join("turntable.glb"))
            .args(["--frames", "12", "--spp", "4", "--width", "48", "--height", "27", "--format", "png,exr"])
            .args(["--threads", "2", "--engine", engine, "--gpu", gpu])
            .arg("--module")
            .arg(tessera_guest_build::components_dir().join("pathtracer.wasm"))
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let (cpu, gpu) = (dir.path().join("cpu"), dir.path().join("gpu"));
    let run = render("cpu", "auto", &cpu);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let run = render("gpu", "llvmpipe", &gpu);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("rendering on llvmpipe"), "{stderr}");
    let a = image::open(cpu.join("turntable-0012.png")).unwrap().to_rgb8();
    let b = image::open(gpu.join("turntable-0012.png")).unwrap().to_rgb8();
    let worst = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    assert!(worst <= 1, "the GPU render is {worst} levels from the CPU's");
    // `--engine gpu` needs a GPU: this machine has only a software one,
    // which `auto` never picks; a name that matches nothing lists them.
    let run = render("gpu", "auto", &dir.path().join("none"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("--engine gpu: no GPU adapter"), "{stderr}");
    let run = render("auto", "no such gpu", &dir.path().join("none"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("llvmpipe"), "{stderr}");
    // `auto` without a GPU renders on the CPU, the same bits.
    let auto = dir.path().join("auto");
    let run = render("auto", "auto", &auto);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(
        std::fs::read(auto.join("turntable-0012.exr")).unwrap(),
        std::fs::read(cpu.join("turntable-0012.exr")).unwrap()
    );
}

#[test]
fn render_refuses_a_bad_scene_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.glb");
    std::fs::write(&bad, b"glTF\x02\x00\x00\x00garbage").unwrap();
    let run = tessera()
        .arg("render")
        .arg(&bad)
        .arg("--module")
        .arg(tessera_guest_build::components_dir().join("pathtracer.wasm"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("broken.glb") && stderr.contains("malformed GLB"), "{stderr}");

    let run = tessera()
        .arg("render")
        .arg(scenes().join("turntable-draco.gltf"))
        .arg("--module")
        .arg(tessera_guest_build::components_dir().join("pathtracer.wasm"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("KHR_draco_mesh_compression"), "{stderr}");

    let run = tessera().arg("render").arg(scenes().join("cornell.gltf")).args(["--frames", "9-1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("9-1"), "{stderr}");
}

#[test]
fn render_refuses_frames_too_big_to_hold() {
    let run = tessera()
        .arg("render")
        .arg(scenes().join("cornell.gltf"))
        .args(["--width", "20000", "--height", "20000"])
        .arg("--module")
        .arg(tessera_guest_build::components_dir().join("pathtracer.wasm"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("20000x20000 is out of range"), "{stderr}");
}

/// Built with a wasm toolchain (as CI is), the binary carries the path
/// tracer and renders from any directory with no other file.
#[test]
fn render_works_from_anywhere_with_the_embedded_job() {
    let dir = tempfile::tempdir().unwrap();
    let run = tessera()
        .current_dir(dir.path())
        .env("TESSERA_CACHE_DIR", dir.path().join("cache"))
        .arg("render")
        .arg(scenes().join("cornell.gltf"))
        .args(["--spp", "1", "--width", "8", "--height", "8"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(dir.path().join("tessera-out/cornell-0001.png").exists());
    // The compiled module was cached for the next run.
    assert_eq!(std::fs::read_dir(dir.path().join("cache/modules")).unwrap().count(), 1);
}
