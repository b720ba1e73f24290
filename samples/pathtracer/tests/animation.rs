//! The turntable scene at given frames: every animated thing is where its
//! keyframes put it (times are `frame / fps`, as Blender exports them).

mod common;
use common::*;
use glam::Vec3;
use pathtracer::PathTracer;
use tessera_guest_sdk::Job;

fn prepared(frame: i32) -> PathTracer {
    let mut job = load(&scene("turntable.glb"), 64, 36, "{}").unwrap();
    job.prepare_frame(frame).unwrap();
    job
}

fn bounds_of(job: &PathTracer, node_name: &str) -> pathtracer::bvh::Aabb {
    let scene = job.scene();
    let frame = job.frame().unwrap();
    let node = scene.nodes.iter().position(|n| n.name == node_name).unwrap_or_else(|| panic!("no node {node_name}"));
    frame
        .instances
        .iter()
        .filter(|i| i.node == node)
        .fold(pathtracer::bvh::Aabb::EMPTY, |a, i| a.union(&i.world_bounds()))
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-3
}

#[test]
fn the_scene_reports_its_frame_range_and_cameras() {
    let (_, info) = PathTracer::load(&scene("turntable.glb"), &settings(64, 36, "{}")).unwrap();
    assert_eq!((info.frame_start, info.frame_end), (0, 48));
    assert_eq!(info.cameras, ["Camera", "Closeup"]);
    assert_eq!((info.width, info.height), (1920, 1080));
}

#[test]
fn cubic_spline_translation() {
    // Bouncer: y 0.15 → 1.5 → 0.15 over t = 0, 1, 2 with flat tangents.
    for (frame, y) in [(0, 0.15), (24, 1.5), (48, 0.15), (12, 0.15 + (1.5 - 0.15) * 0.5)] {
        let b = bounds_of(&prepared(frame), "Bouncer");
        let centre = (b.min + b.max) * 0.5;
        assert!(close(centre.y, y), "frame {frame}: centre {centre}");
        assert!(close(centre.x, 2.0));
    }
}

#[test]
fn step_scale() {
    // Blinker: scale 1 until t = 1, then 0.5 (STEP).
    let size = |frame| {
        let b = bounds_of(&prepared(frame), "Blinker");
        b.max.x - b.min.x
    };
    assert!(close(size(23), 0.3));
    assert!(close(size(24), 0.15));
    assert!(close(size(36), 0.15));
}

#[test]
fn linear_rotation_spins_the_statue() {
    // Spin: a quarter turn about +Y every 0.5 s; the statue sits on the
    // turntable's axis, so watch its texture-space tangent frame instead:
    // the instance transform's +X axis.
    for (frame, degrees) in [(0, 0.0f32), (6, 45.0), (12, 90.0), (24, 180.0)] {
        let job = prepared(frame);
        let node = job.scene().nodes.iter().position(|n| n.name == "Statue").unwrap();
        let inst = job.frame().unwrap().instances.iter().find(|i| i.node == node).unwrap();
        let x = inst.to_world.transform_vector3(Vec3::X);
        let want = Vec3::new(degrees.to_radians().cos(), 0.0, -degrees.to_radians().sin());
        assert!((x - want).length() < 1e-3, "frame {frame}: +X → {x}, want {want}");
    }
}

#[test]
fn morph_target_weights() {
    // Blob: the top rises by 0.5 × weight; weight 0 → 1 → 0 over t = 0, 1, 2.
    for (frame, top) in [(0, 0.5), (12, 0.75), (24, 1.0)] {
        let b = bounds_of(&prepared(frame), "Blob");
        assert!(close(b.max.y, top), "frame {frame}: top {}", b.max.y);
    }
}

#[test]
fn skinning_bends_the_arm() {
    // Bone.Upper turns 60° about +Z at t = 1: the top of the arm, 0.6 above
    // the elbow, moves to (−0.6·sin 60°, 0.6 + 0.6·cos 60°) = (−0.52, 0.9).
    let rest = bounds_of(&prepared(0), "Arm");
    assert!(close(rest.max.y, 1.2) && close(rest.min.x, -0.1));
    let bent = bounds_of(&prepared(24), "Arm");
    assert!(bent.min.x < -0.5 - 0.05, "arm min x {}", bent.min.x);
    assert!(bent.max.y < 1.05 && bent.max.y > 0.9, "arm top {}", bent.max.y);
}
