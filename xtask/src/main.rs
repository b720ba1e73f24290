//! The project's commands, so that a fresh machine needs nothing but cargo:
//!
//! - `cargo xtask setup`: installs the wasm toolchain (the rustup target, or
//!   Debian's rustc-web where rustup cannot download it).
//! - `cargo xtask build-guests [NAME...]`: builds guest crates into components
//!   under `target/guests/components/`.
//! - `cargo xtask test [ARGS...]`: setup, guests, then the whole test suite.
//! - `cargo xtask demo [ARGS...]`: setup, guests, then `tessera demo`.
//! - `cargo xtask bench [ARGS...]`: setup, guests, then the benchmark table.
//! - `cargo xtask soak [ARGS...]`: the coordinator under load for a bounded
//!   time (`--minutes`, `--workers`, `--clients`); fails past its bounds.
//! - `cargo xtask fuzz [TARGET] [--secs N] [--input FILE]`: the fuzz targets
//!   (`scene_import`, `wire_decode`, `upload`; default all) for N seconds
//!   each (default 300) with cargo-fuzz on nightly, else with the bounded
//!   fuzzer CI runs; `--input` reruns one saved input.
//! - `cargo xtask bench-cycles [ARGS...]`: the path tracer beside Blender
//!   Cycles on the same scene (installs Debian's `blender`).
//! - `cargo xtask fidelity [ARGS...]`: Tessera's frames against Cycles' on
//!   scripted Blender scenes (benches/cycles/fidelity.py); fails past 3 %
//!   per frame mean or 5 % per cell of a 4×4 grid.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tessera_guest_build::{Toolchain, GUESTS};

const USAGE: &str =
    "usage: cargo xtask <setup | build-guests [NAME...] | test [ARGS...] | demo [ARGS...] | bench [ARGS...] | soak [ARGS...] | fuzz [TARGET] [--secs N] [--input FILE] | bench-cycles [ARGS...] | fidelity [ARGS...] | blender-addon>";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else { bail!("{USAGE}") };
    let rest: Vec<String> = args.collect();
    match cmd.as_str() {
        "setup" => setup().map(|_| ()),
        "build-guests" => build_guests(setup()?, &rest),
        "test" => {
            build_guests(setup()?, &[])?;
            // The API's Python example runs against a live coordinator.
            if Command::new("python3").arg("--version").output().is_err() {
                tessera_guest_build::apt_install(&["python3"])?;
            }
            // The web page's tests drive a real headless Chromium; the
            // Blender add-on's run in Debian's Blender (whose glTF exporter
            // needs NumPy); the GPU host's run on Mesa's lavapipe (Vulkan on
            // the CPU); the store's suite and the farm's PostgreSQL tests
            // start a throw-away cluster of Debian's PostgreSQL.
            tessera_guest_build::apt_install(&[
                "chromium",
                "chromium-driver",
                "blender",
                "python3-numpy",
                "mesa-vulkan-drivers",
                "libvulkan1",
                "postgresql",
            ])?;
            cargo(&["test", "--workspace", "--all-targets"], &rest)?;
            if rest.is_empty() {
                root_tests()?;
            }
            // Doc examples are compiled and run too (the SDK's are `ignore`d:
            // they only make sense inside a guest crate).
            cargo(&["test", "--workspace", "--doc"], &[])
        }
        "demo" => {
            build_guests(setup()?, &["spheres".into()])?;
            // The release profile, as the binaries README's "Running a farm" builds:
            // one build serves both.
            cargo(
                &["run", "--release", "--quiet", "--package", "tessera-coordinator", "--bin", "tessera", "--", "demo"],
                &rest,
            )
        }
        "bench" => {
            build_guests(setup()?, &["spheres".into(), "gradient".into(), "pathtracer".into()])?;
            cargo(&["run", "--release", "--quiet", "--package", "tessera-benches", "--"], &rest)
        }
        "soak" => {
            // The coordinator under 1,000 simulated workers and 200 API
            // clients for a bounded time (benches/src/soak.rs); exits 1 if
            // it breaks its memory or latency bounds. With verification on,
            // the simulated workers path-trace their tiles with the guest.
            build_guests(setup()?, &["pathtracer".into()])?;
            cargo(&["build", "--release", "--quiet", "--package", "tessera-benches"], &[])?;
            let mut args = vec!["--soak".to_string()];
            args.extend(rest.iter().cloned());
            cargo(&["run", "--release", "--quiet", "--package", "tessera-benches", "--"], &args)
        }
        "bench-cycles" => blender_script("benches/cycles/compare.py", &rest, |args| {
            if !rest.iter().any(|a| a == "--scene") {
                let root = tessera_guest_build::workspace_root();
                args.extend(["--scene".into(), root.join("samples/scenes/cornell.gltf").display().to_string()]);
            }
        }),
        // Tessera's frames against Cycles' on scripted Blender scenes, at
        // the bounds; exits 1 past them. CI runs a small version.
        "fidelity" => blender_script("benches/cycles/fidelity.py", &rest, |args| {
            if !rest.iter().any(|a| a == "--check") {
                args.push("--check".into());
            }
        }),
        "fuzz" => fuzz(&rest),
        "blender-addon" => {
            // The Blender add-on's zips (blender/README.md), in target/blender.
            if Command::new("python3").arg("--version").output().is_err() {
                tessera_guest_build::apt_install(&["python3"])?;
            }
            let root = tessera_guest_build::workspace_root();
            let status = Command::new("python3")
                .arg(root.join("blender/build_addon.py"))
                .arg("--out")
                .arg(root.join("target/blender"))
                .status()
                .context("running python3")?;
            if !status.success() {
                bail!("building the add-on failed ({status})");
            }
            Ok(())
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

/// Tests that need root (they mount a tmpfs to fill a disk), `#[ignore]`d
/// for a plain `cargo test` so that it lists them as ignored instead of
/// passing them unrun. All in `tessera-coordinator`'s `all` test binary.
const ROOT_TESTS: &[&str] = &[
    "faults::a_full_coordinator_disk_fails_the_job_clearly_and_retry_completes_it",
    "faults::a_worker_with_a_full_cache_fails_tiles_retryably_and_recovers",
];

/// Runs [`ROOT_TESTS`] as root. CI runs as root, so there a non-root run is
/// an error; elsewhere it says plainly that they were skipped.
fn root_tests() -> Result<()> {
    let uid = Command::new("id").arg("-u").output().context("running id -u")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        if std::env::var_os("CI").is_some() {
            bail!("CI must run as root: the full-disk tests need it ({})", ROOT_TESTS.join(", "));
        }
        eprintln!("xtask: SKIPPED, not root (they mount a tmpfs): {}", ROOT_TESTS.join(", "));
        return Ok(());
    }
    let mut args = vec!["test", "--package", "tessera-coordinator", "--test", "all", "--", "--ignored", "--exact"];
    args.extend(ROOT_TESTS);
    cargo(&args, &[])
}

/// The fuzz targets (fuzz-targets/src/lib.rs, fuzz/fuzz_targets/).
const FUZZ_TARGETS: &[&str] = &["scene_import", "wire_decode", "upload"];

/// `cargo xtask fuzz [TARGET] [--secs N] [--input FILE]`. Long runs want
/// coverage guidance, which only cargo-fuzz (libFuzzer, nightly) gives; where
/// nightly is missing (CI has only stable) the same targets run under the
/// bounded fuzzer of `fuzz-targets/tests/fuzz.rs` for the same time.
fn fuzz(args: &[String]) -> Result<()> {
    let (mut targets, mut secs, mut input) = (Vec::new(), 300u64, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().context("--secs needs a number")?.parse().context("--secs")?,
            "--input" => input = Some(it.next().context("--input needs a file")?.clone()),
            t if FUZZ_TARGETS.contains(&t) => targets.push(t.to_string()),
            other => bail!("unknown fuzz target or option {other:?} (targets: {})", FUZZ_TARGETS.join(", ")),
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.iter().map(|t| t.to_string()).collect();
    }
    let root = tessera_guest_build::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let bounded = |target: &str, env: &[(&str, String)]| -> Result<()> {
        let status = Command::new(&cargo)
            .current_dir(&root)
            .args(["test", "--package", "tessera-fuzz-targets", "--test", "fuzz", &format!("fuzz_{target}")])
            .env("TESSERA_FUZZ_TARGET", target)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .status()
            .with_context(|| format!("running {cargo}"))?;
        if !status.success() {
            bail!("fuzzing {target} failed ({status})");
        }
        Ok(())
    };
    if let Some(file) = input {
        let file = std::path::absolute(&file).context("--input")?;
        for t in &targets {
            bounded(t, &[("TESSERA_FUZZ_INPUT", file.display().to_string())])?;
        }
        return Ok(());
    }
    // Plain `cargo`, not $CARGO: `+nightly` is rustup's proxy syntax.
    let nightly = Command::new("cargo").args(["+nightly", "--version"]).output().is_ok_and(|o| o.status.success());
    let mut have_fuzz = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if nightly && !have_fuzz {
        eprintln!("xtask: installing cargo-fuzz");
        have_fuzz = Command::new("cargo").args(["install", "cargo-fuzz"]).status().is_ok_and(|s| s.success());
    }
    for t in &targets {
        if !(nightly && have_fuzz) {
            eprintln!("xtask: no nightly toolchain or cargo-fuzz: {t} with the bounded fuzzer for {secs} s");
            bounded(t, &[("TESSERA_FUZZ_SECS", secs.to_string())])?;
            continue;
        }
        // libFuzzer grows fuzz/corpus/<t> (ignored by git), starting from
        // the committed seeds. No sanitizer: the code is safe Rust, and ASan
        // would double the build and halve the executions.
        let corpus = root.join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        let status = Command::new("cargo")
            .current_dir(root.join("fuzz"))
            .args(["+nightly", "fuzz", "run", "--sanitizer", "none", t])
            .arg(&corpus)
            .arg(root.join("fuzz-targets/corpus").join(t))
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            // The coordinator's build script would build and embed the
            // sample guests; the targets do not run them.
            .env("TESSERA_SKIP_EMBED", "1")
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            bail!("cargo fuzz run {t} failed ({status}); the crashing input is under fuzz/artifacts/{t}/");
        }
    }
    Ok(())
}

fn setup() -> Result<Toolchain> {
    // On a machine that cannot reach the rustup server, `rustup target add`
    // waits forever: give it a minute, then fall back to Debian's packages.
    let t = tessera_guest_build::ensure_toolchain(Duration::from_secs(60))?;
    eprintln!("xtask: wasm toolchain: {t:?}");
    Ok(t)
}

fn build_guests(toolchain: Toolchain, names: &[String]) -> Result<()> {
    let names: Vec<&str> = if names.is_empty() { GUESTS.to_vec() } else { names.iter().map(String::as_str).collect() };
    for name in names {
        if !GUESTS.contains(&name) {
            bail!("unknown guest {name:?} (known: {})", GUESTS.join(", "));
        }
        let started = Instant::now();
        let path = tessera_guest_build::build(name, toolchain, true)?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        eprintln!("xtask: built {} ({} KiB, {:.1?})", path.display(), size / 1024, started.elapsed());
    }
    Ok(())
}

/// Runs a script of `benches/cycles/` in Debian's Blender against the
/// release `tessera` (both installed or built first), with `rest` after the
/// defaults `more` adds.
fn blender_script(script: &str, rest: &[String], more: impl FnOnce(&mut Vec<String>)) -> Result<()> {
    build_guests(setup()?, &["pathtracer".into(), "spheres".into()])?;
    tessera_guest_build::apt_install(&["blender", "python3-numpy"])?;
    cargo(&["build", "--release", "--quiet", "--package", "tessera-coordinator", "--bin", "tessera"], &[])?;
    let root = tessera_guest_build::workspace_root();
    let mut args: Vec<String> = vec![
        "-b".into(),
        "--factory-startup".into(),
        "--python-exit-code".into(),
        "1".into(),
        "--python".into(),
        root.join(script).display().to_string(),
        "--".into(),
        "--tessera".into(),
        root.join("target/release/tessera").display().to_string(),
    ];
    more(&mut args);
    args.extend(rest.iter().cloned());
    let status = Command::new("blender").args(&args).current_dir(&root).status().context("running blender")?;
    if !status.success() {
        bail!("{script} failed ({status})");
    }
    Ok(())
}

fn cargo(args: &[&str], extra: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(tessera_guest_build::workspace_root())
        .args(args)
        .args(extra)
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// The crates a crate reaches through normal (not dev or build)
    /// dependencies, by name, as `cargo tree` resolves them.
    fn normal_dependencies(krate: &str) -> Vec<String> {
        let out = Command::new(env!("CARGO"))
            .args(["tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}"])
            .current_dir(tessera_guest_build::workspace_root())
            .output()
            .expect("running cargo tree");
        assert!(out.status.success(), "cargo tree -p {krate}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .filter(|name| name != krate)
            .collect()
    }

    /// ARCHITECTURE.md's dependency rules (crate map): the pure crates reach
    /// no I/O crate, so they build and test without a runtime, sockets, a
    /// database or a sandbox; the store reaches SQLite and nothing of the
    /// server; the client (default features) reaches neither the server
    /// side nor the sandbox, so a studio's tool can depend on it.
    #[test]
    fn crate_dependency_rules() {
        const IO: &[&str] = &["tokio", "quinn", "wasmtime", "rusqlite", "axum", "hyper", "wgpu", "mio", "ureq"];
        const SERVER: &[&str] = &[
            "tessera-coordinator",
            "tessera-store",
            "tessera-worker",
            "rusqlite",
            "wasmtime",
            "axum",
            "hyper",
            "tokio",
            "quinn",
            "wgpu",
        ];
        const STORE: &[&str] = &["tokio", "quinn", "wasmtime", "axum", "hyper", "wgpu", "mio", "tessera-coordinator"];
        const STORE_BACKEND: &[&str] = &["quinn", "wasmtime", "axum", "hyper", "wgpu", "tessera-coordinator"];
        let rules: &[(&str, &[&str])] = &[
            ("tessera-store-postgres", STORE_BACKEND),
            ("tessera-scheduler", IO),
            ("tessera-protocol", IO),
            ("tessera-denoise", IO),
            ("tessera-frame", IO),
            ("tessera-client", SERVER),
            ("tessera-store", STORE),
        ];
        for (krate, forbidden) in rules {
            let deps = normal_dependencies(krate);
            let broken: Vec<&String> = deps.iter().filter(|d| forbidden.contains(&d.as_str())).collect();
            assert!(broken.is_empty(), "{krate} may not depend on {broken:?} (ARCHITECTURE.md, crate map)");
        }
        // The scheduler and the test scaffolds depend on nothing at all.
        assert_eq!(normal_dependencies("tessera-scheduler"), Vec::<String>::new());
        assert_eq!(normal_dependencies("tessera-test-support"), Vec::<String>::new());
    }
}
