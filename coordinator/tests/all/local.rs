//! Rendering a frame on several threads: tiles have no seams, the thread
//! count does not change a bit, and a failing guest fails the render cleanly.

use tessera_coordinator::local::{render_frame, FrameJob, LocalRenderError};
use tessera_worker::sandbox::*;

use crate::guest;

fn job(tile_size: u32, threads: usize) -> FrameJob {
    FrameJob { frame: 5, tile_size, samples: 3, seed: 21, threads }
}

#[test]
fn frames_do_not_depend_on_tiling_or_threads() {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let module = sandbox.load(&guest("spheres")).unwrap();
    let spec = JobSpec::new(Vec::new(), JobSettings::new(40, 24));

    let mut calls = 0;
    let (whole, stats) = render_frame(&module, &spec, &job(64, 1), |_, _, _| calls += 1).unwrap();
    assert_eq!((stats.tiles, calls), (1, 1));
    let (tiled, stats) = render_frame(&module, &spec, &job(7, 1), |_, _, _| {}).unwrap();
    assert_eq!(stats.tiles, 6 * 4);
    let (parallel, _) = render_frame(&module, &spec, &job(7, 3), |_, _, _| {}).unwrap();

    assert!(whole.weight.iter().all(|w| *w == 3.0));
    assert_eq!(whole, tiled, "tile seams: a tiled frame differs from the whole-frame render");
    assert_eq!(tiled, parallel, "the thread count changed the pixels");
    assert!(whole.to_srgb8().iter().any(|b| *b > 0));
}

#[test]
fn a_failing_guest_fails_the_render_with_the_tile_named() {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let module = sandbox.load(&guest("hostile")).unwrap();
    let mut spec = JobSpec::new(Vec::new(), JobSettings { extra: "panic".into(), ..JobSettings::new(32, 32) });
    spec.fuel.per_tile = 10_000_000;
    let err = render_frame(&module, &spec, &job(16, 2), |_, _, _| {}).unwrap_err();
    assert!(matches!(err, LocalRenderError::Tile { .. }), "{err}");
    assert!(err.to_string().contains("panics on purpose"), "{err}");
}
