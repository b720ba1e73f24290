//! Compiled modules are cached in memory and on disk, keyed by the module's
//! hash and the engine; a damaged cache file is recompiled, not trusted.

use tessera_worker::sandbox::*;

use crate::*;

fn cached_sandbox(dir: &std::path::Path) -> Sandbox {
    Sandbox::new(SandboxConfig {
        limits: test_limits(),
        cache_dir: Some(dir.to_path_buf()),
        ..SandboxConfig::default()
    })
    .unwrap()
}

#[test]
fn compile_once_then_memory_then_disk() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest("gradient");
    let s = cached_sandbox(dir.path());
    let (m, first) = s.load_with_outcome(&wasm).unwrap();
    assert_eq!(first, CacheOutcome::Compiled);
    assert_eq!(s.load_with_outcome(&wasm).unwrap().1, CacheOutcome::Memory);

    let files: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with(&m.hash().to_hex()) && files[0].ends_with(".cwasm"), "{files:?}");

    let (m2, outcome) = cached_sandbox(dir.path()).load_with_outcome(&wasm).unwrap();
    assert_eq!(outcome, CacheOutcome::Disk);
    let out = m2.instantiate(&JobSpec::new(Vec::new(), JobSettings::new(8, 8))).unwrap();
    assert_eq!(out.scene_info().frame_end, 24);
}

#[test]
fn a_corrupt_cache_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest("gradient");
    cached_sandbox(dir.path()).load(&wasm).unwrap();
    let file = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&file, b"not a compiled module").unwrap();

    let (m, outcome) = cached_sandbox(dir.path()).load_with_outcome(&wasm).unwrap();
    assert_eq!(outcome, CacheOutcome::Compiled);
    let mut inst = m.instantiate(&JobSpec::new(Vec::new(), JobSettings::new(8, 8))).unwrap();
    inst.render_tile(&TileRequest::new(1, rect(0, 0, 8, 8), 0, 1, 1)).unwrap();
    assert!(std::fs::read(&file).unwrap().len() > 1000, "the good artefact was written back");
}

#[test]
fn refused_modules_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let s = cached_sandbox(dir.path());
    assert!(s.load(b"\0asm\x01\0\0\0").is_err());
    assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0), 0);
}
