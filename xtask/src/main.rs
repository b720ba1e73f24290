//! The project's commands, so that a fresh machine needs nothing but cargo:
//!
//! - `cargo xtask setup`: installs the wasm toolchain (the rustup target, or
//!   Debian's rustc-web where rustup cannot download it).
//! - `cargo xtask build-guests [NAME...]`: builds guest crates into components
//!   under `target/guests/components/`.
//! - `cargo xtask test [ARGS...]`: setup, guests, then the whole test suite.
//! - `cargo xtask demo [ARGS...]`: setup, guests, then `tessera demo`.
//! - `cargo xtask bench [ARGS...]`: setup, guests, then the benchmark table.
//! - `cargo xtask bench-cycles [ARGS...]`: the path tracer beside Blender
//!   Cycles on the same scene (installs Debian's `blender`).

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tessera_guest_build::{Toolchain, GUESTS};

const USAGE: &str =
    "usage: cargo xtask <setup | build-guests [NAME...] | test [ARGS...] | demo [ARGS...] | bench [ARGS...] | bench-cycles | blender-addon>";

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
            // the CPU).
            tessera_guest_build::apt_install(&[
                "chromium",
                "chromium-driver",
                "blender",
                "python3-numpy",
                "mesa-vulkan-drivers",
                "libvulkan1",
            ])?;
            cargo(&["test", "--workspace", "--all-targets"], &rest)?;
            // Doc examples are compiled and run too (the SDK's are `ignore`d:
            // they only make sense inside a guest crate).
            cargo(&["test", "--workspace", "--doc"], &[])
        }
        "demo" => {
            build_guests(setup()?, &["spheres".into()])?;
            cargo(&["run", "--quiet", "--package", "tessera-coordinator", "--bin", "tessera", "--", "demo"], &rest)
        }
        "bench" => {
            build_guests(setup()?, &["spheres".into(), "gradient".into(), "pathtracer".into()])?;
            cargo(&["run", "--release", "--quiet", "--package", "tessera-benches", "--"], &rest)
        }
        "bench-cycles" => {
            // Tessera beside Blender Cycles on the same scene (Debian's
            // `blender`); prints a Markdown table. Not part of CI.
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
                root.join("benches/cycles/compare.py").display().to_string(),
                "--".into(),
                "--tessera".into(),
                root.join("target/release/tessera").display().to_string(),
            ];
            if !rest.iter().any(|a| a == "--scene") {
                args.extend(["--scene".into(), root.join("samples/scenes/cornell.gltf").display().to_string()]);
            }
            args.extend(rest.iter().cloned());
            let status = Command::new("blender").args(&args).current_dir(&root).status().context("running blender")?;
            if !status.success() {
                bail!("the Cycles comparison failed ({status})");
            }
            Ok(())
        }
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
