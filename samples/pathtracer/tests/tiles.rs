//! Pixels are pure: a tile is the same region of a full-frame render, bit
//! for bit, and sample ranges add up.

mod common;
use common::*;
use tessera_guest_sdk::{AovSet, Job, Rect, SampleRange, TileRequest};

fn assert_region_equal(full: &tessera_guest_sdk::TileResult, fw: u32, t: &tessera_guest_sdk::TileResult, r: Rect) {
    for row in 0..r.height {
        for col in 0..r.width {
            let f = ((r.y + row) * fw + r.x + col) as usize;
            let i = (row * r.width + col) as usize;
            assert_eq!(full.weight[f], t.weight[i]);
            for c in 0..3 {
                assert_eq!(
                    full.color[3 * f + c].to_bits(),
                    t.color[3 * i + c].to_bits(),
                    "pixel {},{}",
                    r.x + col,
                    r.y + row
                );
            }
        }
    }
}

#[test]
fn tiles_equal_the_full_frame_bit_for_bit() {
    for (name, frame) in [("cornell.gltf", 1), ("turntable.glb", 17)] {
        let (w, h) = (40, 30);
        let mut job = load(&scene(name), w, h, "{}").unwrap();
        let full = tile(&mut job, frame, Rect { x: 0, y: 0, width: w, height: h }, 3);
        // A fresh instance, tiles in an odd order, another frame in between.
        let mut other = load(&scene(name), w, h, "{}").unwrap();
        for r in [Rect { x: 25, y: 17, width: 15, height: 13 }, Rect { x: 0, y: 0, width: 7, height: 5 }] {
            tile(&mut other, frame + 5, Rect { x: 0, y: 0, width: 4, height: 4 }, 1);
            let t = tile(&mut other, frame, r, 3);
            assert_region_equal(&full, w, &t, r);
        }
    }
}

#[test]
fn sample_ranges_are_independent_and_add_up() {
    let (w, h) = (16, 16);
    let mut job = load(&scene("cornell.gltf"), w, h, "{}").unwrap();
    let r = Rect { x: 0, y: 0, width: w, height: h };
    let req = |start, count| TileRequest {
        frame: 1,
        rect: r,
        samples: SampleRange { start, count },
        seed: 7,
        aovs: AovSet::empty(),
    };
    let all = job.render_tile(&req(0, 6)).unwrap();
    let a = job.render_tile(&req(0, 2)).unwrap();
    let b = job.render_tile(&req(2, 4)).unwrap();
    for i in 0..(w * h) as usize {
        assert_eq!(a.weight[i] + b.weight[i], all.weight[i]);
        for c in 0..3 {
            let (s, t) = (a.color[3 * i + c] + b.color[3 * i + c], all.color[3 * i + c]);
            assert!((s - t).abs() <= 1e-4 * t.abs().max(1e-3), "pixel {i}: {s} vs {t}");
        }
    }
}

/// A progressive job's passes (samples cut at 1, 4, 16: blocks), added in
/// order as the coordinator adds tiles, are the single-pass render bit for
/// bit: colour, weight and the denoiser's guides.
#[test]
fn passes_cut_at_sample_blocks_add_up_bit_for_bit() {
    let (w, h) = (12, 10);
    let mut job = load(&scene("cornell.gltf"), w, h, "{}").unwrap();
    let r = Rect { x: 0, y: 0, width: w, height: h };
    let req = |start, count| TileRequest {
        frame: 1,
        rect: r,
        samples: SampleRange { start, count },
        seed: 11,
        aovs: AovSet::ALBEDO | AovSet::NORMAL,
    };
    let all = job.render_tile(&req(0, 20)).unwrap();
    let mut sum = tessera_guest_sdk::TileResult::for_request(&req(0, 20));
    let mut guides = vec![vec![0.0f32; (3 * w * h) as usize]; 2];
    for (start, count) in [(0, 1), (1, 3), (4, 12), (16, 4)] {
        let pass = job.render_tile(&req(start, count)).unwrap();
        for (d, s) in sum.color.iter_mut().zip(&pass.color) {
            *d += s;
        }
        for (d, s) in sum.weight.iter_mut().zip(&pass.weight) {
            *d += s;
        }
        for (g, plane) in guides.iter_mut().zip(&pass.aovs) {
            for (d, s) in g.iter_mut().zip(&plane.data) {
                *d += s;
            }
        }
    }
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&sum.color), bits(&all.color));
    assert_eq!(bits(&sum.weight), bits(&all.weight));
    for (g, plane) in guides.iter().zip(&all.aovs) {
        assert_eq!(bits(g), bits(&plane.data), "{}", plane.name);
    }
}

#[test]
fn aovs_come_back_when_asked() {
    let mut job = load(&scene("cornell.gltf"), 8, 8, "{}").unwrap();
    let req = TileRequest {
        frame: 1,
        rect: Rect { x: 0, y: 0, width: 8, height: 8 },
        samples: SampleRange { start: 0, count: 2 },
        seed: 1,
        aovs: AovSet::ALBEDO | AovSet::NORMAL | AovSet::DEPTH,
    };
    let t = job.render_tile(&req).unwrap();
    let names: Vec<&str> = t.aovs.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["albedo", "normal", "depth"]);
    assert_eq!(t.aovs[0].data.len(), 3 * 64);
    assert_eq!(t.aovs[2].data.len(), 64);
    // The camera is 3.94 m in front of the back wall; every depth is in the box.
    assert!(t.aovs[2].data.iter().all(|d| *d / 2.0 > 1.0 && *d / 2.0 < 6.0));
}
