//! DESIGN.md invariants 1 and 2 through the real sandbox: the same tile
//! gives the same bytes in one instance, in fresh instances and in a fresh
//! engine; a tile equals the same region of a bigger render.

use tessera_protocol::ContentHash;
use tessera_worker::sandbox::*;

use crate::*;

fn spheres_spec() -> JobSpec {
    JobSpec::new(Vec::new(), JobSettings::new(48, 32))
}

/// Renders `req` of the spheres job in a fresh instance of a fresh engine.
fn fresh_spheres_tile(sandbox: &Sandbox, req: &TileRequest) -> TileOutput {
    sandbox.load(&guest("spheres")).unwrap().instantiate(&spheres_spec()).unwrap().render_tile(req).unwrap()
}

fn bytes(out: &TileOutput) -> Vec<u8> {
    out.accumulators.canonical_bytes()
}

#[test]
fn the_same_tile_twice_gives_identical_bytes() {
    let req = TileRequest::new(3, rect(8, 8, 16, 8), 0, 4, 99);
    let sandbox_a = sandbox(test_limits());
    let module = sandbox_a.load(&guest("spheres")).unwrap();

    let mut one = module.instantiate(&spheres_spec()).unwrap();
    let first = one.render_tile(&req).unwrap();
    // Another frame in between must not leak state into the repeat.
    one.render_tile(&TileRequest::new(7, rect(0, 0, 8, 8), 0, 2, 5)).unwrap();
    let again = one.render_tile(&req).unwrap();

    let fresh = module.instantiate(&spheres_spec()).unwrap().render_tile(&req).unwrap();
    let other_engine = fresh_spheres_tile(&sandbox(test_limits()), &req);

    assert!(first.accumulators.weight.iter().all(|w| *w == 4.0));
    let hash = ContentHash::of(&bytes(&first));
    for other in [&again, &fresh, &other_engine] {
        assert_eq!(ContentHash::of(&bytes(other)), hash);
    }
    // Fuel is counted, not timed: the same calls on a fresh instance cost the
    // same everywhere. (A reused instance may differ by a few units: the
    // guest's allocator state is part of what runs.)
    assert_eq!(fresh.fuel_used, first.fuel_used);
    assert_eq!(other_engine.fuel_used, first.fuel_used);
    assert!(again.fuel_used.abs_diff(first.fuel_used) < first.fuel_used / 1000);
    assert!(first.fuel_used > 0);
}

#[test]
fn a_tile_equals_its_region_of_the_full_frame() {
    let module = sandbox(test_limits()).load(&guest("spheres")).unwrap();
    let mut inst = module.instantiate(&spheres_spec()).unwrap();
    let full = inst.render_tile(&TileRequest::new(2, rect(0, 0, 48, 32), 0, 3, 11)).unwrap().accumulators;
    let tile = inst.render_tile(&TileRequest::new(2, rect(20, 10, 12, 9), 0, 3, 11)).unwrap().accumulators;
    for row in 0..9 {
        for col in 0..12 {
            let f = (10 + row) * 48 + 20 + col;
            let t = row * 12 + col;
            assert_eq!(full.color[3 * f..3 * f + 3], tile.color[3 * t..3 * t + 3], "pixel {col},{row}");
            assert_eq!(full.weight[f], tile.weight[t]);
        }
    }
}

#[test]
fn sample_ranges_add_up() {
    let module = sandbox(test_limits()).load(&guest("gradient")).unwrap();
    let mut inst = module.instantiate(&JobSpec::new(Vec::new(), JobSettings::new(16, 16))).unwrap();
    let all = inst.render_tile(&TileRequest::new(1, rect(0, 0, 16, 16), 0, 8, 1)).unwrap().accumulators;
    let a = inst.render_tile(&TileRequest::new(1, rect(0, 0, 16, 16), 0, 5, 1)).unwrap().accumulators;
    let b = inst.render_tile(&TileRequest::new(1, rect(0, 0, 16, 16), 5, 3, 1)).unwrap().accumulators;
    for i in 0..256 {
        assert_eq!(a.weight[i] + b.weight[i], all.weight[i]);
        for c in 0..3 {
            let sum = a.color[3 * i + c] + b.color[3 * i + c];
            assert!((sum - all.color[3 * i + c]).abs() <= 1e-5 * all.color[3 * i + c].abs().max(1.0));
        }
    }
}

#[test]
fn seeds_and_frames_change_the_pixels() {
    let module = sandbox(test_limits()).load(&guest("spheres")).unwrap();
    let mut inst = module.instantiate(&spheres_spec()).unwrap();
    let r = rect(0, 0, 16, 16);
    let base = bytes(&inst.render_tile(&TileRequest::new(1, r, 0, 2, 1)).unwrap());
    assert_ne!(base, bytes(&inst.render_tile(&TileRequest::new(1, r, 0, 2, 2)).unwrap()));
    assert_ne!(base, bytes(&inst.render_tile(&TileRequest::new(9, r, 0, 2, 1)).unwrap()));
}

#[test]
fn strict_nan_mode_gives_the_same_bytes_for_a_nan_free_guest() {
    let req = TileRequest::new(1, rect(0, 0, 16, 16), 0, 2, 4);
    let plain = fresh_spheres_tile(&sandbox(test_limits()), &req);
    let strict_engine = Sandbox::new(SandboxConfig {
        limits: test_limits(),
        determinism: Determinism::StrictNan,
        ..SandboxConfig::default()
    })
    .unwrap();
    let strict = fresh_spheres_tile(&strict_engine, &req);
    assert_eq!(bytes(&plain), bytes(&strict));
}
