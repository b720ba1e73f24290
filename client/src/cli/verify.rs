//! `tessera verify`: the flags, and the report printed as it is made
//! ([`crate::verify`] runs the checks). Any ✗ exits non-zero.

use std::path::PathBuf;

use anyhow::Result;

use crate::verify::{verify, Module, Report, VerifyOptions};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// A frame's manifest (`<stem>-NNNN.manifest.json`, as `tessera download`
    /// writes it); the frame's files are looked for beside it.
    manifest: PathBuf,
    /// The job's scene (.glb, or .gltf, packed as `submit` packs it): needed by --recheck.
    #[arg(long, value_name = "S")]
    scene: Option<PathBuf>,
    /// The job's module; default: the path tracer built into this binary.
    #[arg(long, value_name = "M")]
    module: Option<PathBuf>,
    /// The frame's EXR (or PNG) file, if it is not beside the manifest.
    #[arg(long, value_name = "F.exr")]
    frame: Option<PathBuf>,
    /// Re-render N pixels through the guest in the wasm sandbox and compare
    /// them bit for bit (needs --scene).
    #[arg(long, value_name = "N")]
    recheck: Option<u32>,
    /// Seed of the pixels --recheck picks [default: from the manifest's
    /// signature, so a run is repeatable].
    #[arg(long)]
    seed: Option<u64>,
    /// The coordinator's certificate fingerprint (64 hex digits, as
    /// `tessera coordinator` prints it): a manifest signed by any other key fails.
    #[arg(long, value_name = "FINGERPRINT")]
    pin: Option<String>,
}

/// Runs the checks, printing each line as it comes; exits with status 1
/// when one failed. `embedded_module` is the path tracer built into the
/// binary, used for `--recheck` when no `--module` is given.
pub fn run(args: VerifyArgs, embedded_module: Option<&'static [u8]>) -> Result<()> {
    // Read only when a recheck needs it (a missing module is then its failure).
    let module = match args.recheck {
        Some(_) => super::module_bytes(args.module.as_ref(), embedded_module, "pathtracer")
            .map(|bytes| Module {
                bytes,
                origin: args.module.as_ref().map_or("built into this binary".to_string(), |p| p.display().to_string()),
            })
            .map_err(|e| format!("{e:#}")),
        None => Err("no --recheck".into()),
    };
    let options = VerifyOptions {
        manifest: args.manifest,
        frame: args.frame,
        pin: args.pin,
        recheck: args.recheck,
        scene: args.scene,
        module,
        seed: args.seed,
    };
    let mut report = Report::new(|check| println!("{check}"));
    let m = verify(&options, &mut report)?;
    let failed = report.failed();
    if failed > 0 {
        println!("✗ FAILED: {failed} check{} failed", if failed == 1 { "" } else { "s" });
        // The report said why; no error chain (or backtrace) to add.
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }
    println!("✓ verified: frame {} of job {} is what the manifest says", m.frame, m.job.id);
    Ok(())
}
