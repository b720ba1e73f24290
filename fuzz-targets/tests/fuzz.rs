//! The bounded fuzz run CI does on every build: each target on its seeds
//! (generated, committed under `corpus/<target>/`, and for scenes the
//! sample scenes) and then on mutated inputs for `TESSERA_FUZZ_SECS`
//! seconds (default 20) per target, from the fixed seed
//! `TESSERA_FUZZ_SEED` (default 1). No input may panic. Prints executions
//! and executions per second (`--nocapture` shows them).
//! `TESSERA_FUZZ_TARGET=name` runs only that target (the others pass).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tessera_fuzz_targets::{bounded, seeds, Target};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Every seed of a target: generated, committed, and sample files.
fn all_seeds(target: Target) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = seeds::seeds(target).into_iter().map(|(_, b)| b).collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("corpus").join(target.name()))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    if target == Target::SceneImport {
        for name in ["cornell.gltf", "turntable.glb", "turntable-draco.gltf"] {
            files.push(root().join("../samples/scenes").join(name));
        }
    }
    files.sort();
    out.extend(files.iter().filter_map(|p| std::fs::read(p).ok()));
    out
}

/// Prints past the test harness's capture, so CI logs show the figures of
/// a passing run too.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn fuzz(target: Target) {
    if let Ok(only) = std::env::var("TESSERA_FUZZ_TARGET") {
        if !only.is_empty() && only != target.name() {
            return;
        }
    }
    // One input, run as it is (no catching: the panic and its backtrace
    // show): reproducing a failure.
    if let Ok(file) = std::env::var("TESSERA_FUZZ_INPUT") {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        let outcome = target.run(&data);
        say(&format!("fuzz {} on {file}: {outcome}", target.name()));
        return;
    }
    let secs = env_u64("TESSERA_FUZZ_SECS", 20);
    let seed = env_u64("TESSERA_FUZZ_SEED", 1);
    let failure_dir = root().join("../target/fuzz-failures");
    let seeds = all_seeds(target);
    let n_seeds = seeds.len();
    let report = bounded::run(target, seeds, Duration::from_secs(secs), seed, &failure_dir);
    say(&format!(
        "fuzz {}: {} executions in {:.1} s ({:.0}/s) from {n_seeds} seeds, {} distinct outcomes, seed {seed}",
        target.name(),
        report.executions,
        report.elapsed.as_secs_f64(),
        report.execs_per_sec(),
        report.outcomes,
    ));
    if !report.failures.is_empty() {
        let list: Vec<String> =
            report.failures.iter().map(|(p, m)| format!("  {} panicked: {m}", p.display())).collect();
        panic!(
            "fuzz {}: {} distinct panics (inputs saved; rerun one with \
             `cargo xtask fuzz {} --input FILE`):\n{}",
            target.name(),
            report.failures.len(),
            target.name(),
            list.join("\n")
        );
    }
}

#[test]
fn fuzz_scene_import() {
    fuzz(Target::SceneImport);
}

#[test]
fn fuzz_wire_decode() {
    fuzz(Target::WireDecode);
}

#[test]
fn fuzz_upload() {
    fuzz(Target::Upload);
}

/// Rewrites the committed seed corpus from the generated seeds.
#[test]
#[ignore]
fn write_corpus() {
    for target in Target::ALL {
        let dir = root().join("corpus").join(target.name());
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds::seeds(target) {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
