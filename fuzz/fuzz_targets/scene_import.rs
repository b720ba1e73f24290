//! `scene_import`: see tessera-fuzz-targets (the same body runs in CI, bounded).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tessera_fuzz_targets::scene_import(data);
});
