//! Renders the sample scenes to target/look/*.png for a person to look at.
//! Ignored by default: `cargo test -p pathtracer --test look -- --ignored`.

mod common;
use common::*;
use tessera_guest_sdk::Rect;

#[test]
#[ignore]
fn render_the_samples() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/look");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, w, h, frame, spp) in [("cornell.gltf", 256, 256, 1, 64), ("turntable.glb", 384, 216, 12, 32)] {
        let mut job = load(&scene(name), w, h, "{}").unwrap();
        let t = tile(&mut job, frame, Rect { x: 0, y: 0, width: w, height: h }, spp);
        save_png(&t, w, h, &dir.join(format!("{name}.png")));
    }
}
