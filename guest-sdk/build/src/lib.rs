//! Builds guest crates of this workspace into WebAssembly components.
//!
//! A guest is compiled for `wasm32-unknown-unknown` with the `guest` profile
//! and its core module encoded as a component with `wit-component` (no
//! external CLI). Two toolchains are supported, chosen automatically:
//!
//! - **rustup**: the `wasm32-unknown-unknown` target of the active toolchain;
//!   the normal path on a developer's machine.
//! - **debian**: Debian's `rustc-web`, `cargo-web`, `rust-web-src` and
//!   `lld-22`, building `std` from source (`-Zbuild-std`). Used where the
//!   rustup target cannot be downloaded.
//!
//! `TESSERA_GUEST_TOOLCHAIN=rustup|debian` forces one. [`ensure_toolchain`]
//! installs what is missing; [`detect_toolchain`] only looks.
//!
//! Output goes to `target/guests/components/<crate>.wasm`, through a nested
//! cargo with its own target dir (`target/guests`) so that it never waits on
//! the lock of an outer `cargo test` or `cargo run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The guests this workspace builds, in build order.
pub const GUESTS: &[&str] = &["gradient", "spheres", "pathtracer", "hostile"];

/// How guests get compiled to wasm on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toolchain {
    /// The active rustup toolchain with its `wasm32-unknown-unknown` target.
    Rustup,
    /// Debian's `rustc-web` toolchain, building `std` from `rust-web-src`.
    Debian,
}

/// Why a guest could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "no wasm32 toolchain: the rustup target wasm32-unknown-unknown is not installed and \
         Debian's rustc-web/rust-web-src/lld-22 are missing; run `cargo xtask setup`"
    )]
    NoToolchain,
    #[error("installing the wasm toolchain failed: {0}")]
    Install(String),
    #[error("TESSERA_GUEST_TOOLCHAIN={0:?} is not `rustup` or `debian`")]
    BadOverride(String),
    #[error("could not run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("building guest `{name}` failed:\n{output}")]
    Cargo { name: String, output: String },
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("encoding `{name}` as a component: {message}")]
    Encode { name: String, message: String },
}

/// The root of this workspace (where `Cargo.toml` and `target/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

/// Where built components are written.
pub fn components_dir() -> PathBuf {
    workspace_root().join("target/guests/components")
}

/// Finds a usable wasm toolchain without installing anything.
pub fn detect_toolchain() -> Result<Toolchain, BuildError> {
    if let Some(forced) = parse_override(std::env::var("TESSERA_GUEST_TOOLCHAIN").ok().as_deref())? {
        return Ok(forced);
    }
    if rustup_target_installed() {
        Ok(Toolchain::Rustup)
    } else if debian_toolchain_installed() {
        Ok(Toolchain::Debian)
    } else {
        Err(BuildError::NoToolchain)
    }
}

/// Reads `TESSERA_GUEST_TOOLCHAIN`: unset or empty means "choose".
fn parse_override(value: Option<&str>) -> Result<Option<Toolchain>, BuildError> {
    match value {
        Some("rustup") => Ok(Some(Toolchain::Rustup)),
        Some("debian") => Ok(Some(Toolchain::Debian)),
        Some("") | None => Ok(None),
        Some(other) => Err(BuildError::BadOverride(other.to_string())),
    }
}

/// Finds a wasm toolchain, installing one if none is there: first the rustup
/// target (given `rustup_timeout` to download, since where the server cannot
/// be reached `rustup` waits forever), then Debian's packages with apt.
pub fn ensure_toolchain(rustup_timeout: Duration) -> Result<Toolchain, BuildError> {
    if let Ok(t) = detect_toolchain() {
        return Ok(t);
    }
    if which("rustup") {
        eprintln!("tessera: adding the rustup target wasm32-unknown-unknown (at most {rustup_timeout:?})");
        let mut cmd = Command::new("rustup");
        cmd.args(["target", "add", "wasm32-unknown-unknown"]);
        if run_with_timeout(cmd, rustup_timeout).unwrap_or(false) && rustup_target_installed() {
            return Ok(Toolchain::Rustup);
        }
        eprintln!("tessera: rustup could not add the target; using Debian's rustc-web instead");
    }
    let packages = ["rustc-web", "cargo-web", "rust-web-src", "lld-22"];
    apt_install(&packages)?;
    if debian_toolchain_installed() {
        Ok(Toolchain::Debian)
    } else {
        Err(BuildError::Install(format!(
            "apt installed {packages:?} but /usr/bin/rustc or the std sources are missing"
        )))
    }
}

/// Installs Debian packages that are not installed yet (as root, or with
/// `sudo -n`). Does nothing when all are there.
pub fn apt_install(packages: &[&str]) -> Result<(), BuildError> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("tessera: installing Debian packages {missing:?}");
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let apt = |args: &[&str]| -> Result<(), BuildError> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive").stdout(Stdio::null());
        let status = cmd.status().map_err(|e| BuildError::Install(format!("apt-get: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(BuildError::Install(format!("apt-get {} exited with {status}", args.join(" "))))
        }
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}

fn which(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn rustup_target_installed() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "target-libdir", "--target", "wasm32-unknown-unknown"]).output()
    else {
        return false;
    };
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    out.status.success()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd"))))
            .unwrap_or(false)
}

fn debian_toolchain_installed() -> bool {
    Path::new("/usr/bin/rustc").exists()
        && Path::new("/usr/bin/cargo").exists()
        && Path::new("/usr/lib/rustlib/src/rust/library/std/Cargo.toml").exists()
        && (Path::new("/usr/bin/rust-lld").exists() || Path::new("/usr/bin/wasm-ld-22").exists())
}

fn run_with_timeout(mut cmd: Command, timeout: Duration) -> std::io::Result<bool> {
    let mut child = cmd.stdin(Stdio::null()).spawn()?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Builds the guest crate `name` and returns its component's path.
///
/// With `verbose`, cargo's progress goes to stderr; otherwise it is shown only
/// when the build fails.
pub fn build(name: &str, toolchain: Toolchain, verbose: bool) -> Result<PathBuf, BuildError> {
    let root = workspace_root();
    let target_dir = root.join("target/guests");
    let mut cmd = match toolchain {
        Toolchain::Rustup => Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())),
        Toolchain::Debian => Command::new("/usr/bin/cargo"),
    };
    // The nested cargo must not inherit the outer build's configuration.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let keep = key == "CARGO_HOME"
            || key.starts_with("CARGO_NET")
            || key.starts_with("CARGO_HTTP")
            || key.starts_with("CARGO_REGISTR");
        if (key.starts_with("CARGO_") && !keep)
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTFLAGS")
            || key == "RUSTDOCFLAGS"
            || key == "CARGO"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.current_dir(&root)
        .args(["build", "--package", name, "--profile", "guest", "--target", "wasm32-unknown-unknown"])
        .arg("--target-dir")
        .arg(&target_dir);
    // 128-bit SIMD is deterministic in wasm (only relaxed SIMD is not, and
    // the sandbox refuses it); it lets LLVM vectorise the guests' float math.
    cmd.env("RUSTFLAGS", "-C target-feature=+simd128");
    if toolchain == Toolchain::Debian {
        cmd.env("RUSTC", "/usr/bin/rustc").env("RUSTC_BOOTSTRAP", "1").args(["-Zbuild-std=std,panic_abort"]);
    }
    if !verbose {
        cmd.arg("--quiet");
    }
    let out = if verbose {
        let status = cmd.status().map_err(|source| BuildError::Spawn { program: format!("{cmd:?}"), source })?;
        (status.success(), String::from("(see cargo's output above)"))
    } else {
        let out = cmd.output().map_err(|source| BuildError::Spawn { program: format!("{cmd:?}"), source })?;
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    if !out.0 {
        return Err(BuildError::Cargo { name: name.to_string(), output: out.1 });
    }
    let module_path = target_dir.join("wasm32-unknown-unknown/guest").join(format!("{name}.wasm"));
    let module = std::fs::read(&module_path).map_err(|source| BuildError::Io { path: module_path.clone(), source })?;
    let component = componentize(&module).map_err(|message| BuildError::Encode { name: name.to_string(), message })?;
    let dir = components_dir();
    std::fs::create_dir_all(&dir).map_err(|source| BuildError::Io { path: dir.clone(), source })?;
    let path = dir.join(format!("{name}.wasm"));
    // Write then rename: concurrent test processes may build the same guest.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &component).map_err(|source| BuildError::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, &path).map_err(|source| BuildError::Io { path: path.clone(), source })?;
    Ok(path)
}

/// Encodes a core wasm module (with wit-bindgen's embedded type information)
/// as a component, and validates the result.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|e| e.validate(true).encode())
        .map_err(|e| format!("{e:#}"))
}

/// The component bytes of guest `name`, built on first use in this process.
///
/// This is what tests and benchmarks call: it finds the toolchain (without
/// installing one), builds the guest if its sources changed, and caches the
/// bytes for the rest of the process.
pub fn guest(name: &str) -> Result<Arc<Vec<u8>>, BuildError> {
    static CACHE: OnceLock<Mutex<BTreeMap<String, Arc<Vec<u8>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // Holding the lock while building keeps threads of one test binary from
    // starting the same nested cargo twice.
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bytes) = cache.get(name) {
        return Ok(bytes.clone());
    }
    let path = build(name, detect_toolchain()?, false)?;
    let bytes = Arc::new(std::fs::read(&path).map_err(|source| BuildError::Io { path, source })?);
    cache.insert(name.to_string(), bytes.clone());
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_override_is_parsed_strictly() {
        assert_eq!(parse_override(None).unwrap(), None);
        assert_eq!(parse_override(Some("")).unwrap(), None);
        assert_eq!(parse_override(Some("debian")).unwrap(), Some(Toolchain::Debian));
        assert_eq!(parse_override(Some("rustup")).unwrap(), Some(Toolchain::Rustup));
        let err = parse_override(Some("nightly")).unwrap_err();
        assert!(err.to_string().contains("\"nightly\""), "{err}");
    }

    #[test]
    fn the_workspace_root_holds_the_guests() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").exists());
        for g in GUESTS {
            let found =
                ["samples", "samples/test-guests"].iter().any(|d| root.join(d).join(g).join("Cargo.toml").exists());
            assert!(found, "guest {g} has no crate");
        }
    }
}
