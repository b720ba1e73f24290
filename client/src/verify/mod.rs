//! Checking a frame offline against its manifest ([`crate::manifest`]) with
//! no coordinator: what `tessera verify` runs. [`verify`] checks
//! the manifest and the frame's files beside it:
//!
//! 1. the coordinator's signature over the manifest (its certificate hashes
//!    to the fingerprint it states and holds the signing key), and with
//!    `--pin` that the fingerprint is the one given;
//! 2. each tile's worker signature over its commitment (and that the worker
//!    identity is its key's), and the checks the coordinator recorded;
//! 3. that the tiles cover the frame exactly once, with all its samples;
//! 4. that the files listed are beside the manifest with their blake3 and
//!    size, and no other format of the frame is;
//! 5. that the EXR decodes and each tile's pixels hash to its
//!    `pixels_blake3`, and the PNG equals the EXR through the job's view
//!    transform;
//! 5b. for a denoised frame, that the denoised EXR is the manifest's
//!    denoiser applied to the raw EXR's colour and guide channels, bit for
//!    bit, and the denoised PNG that EXR through the view transform;
//! 6. with `--recheck N --scene S`: N pixels, drawn from the manifest's
//!    signature (or `--seed`), rendered again through the guest in the wasm
//!    sandbox as 1×1 tiles and compared with the EXR bit for bit (the
//!    `recheck` feature, which brings in the worker's sandbox: wasmtime).
//!
//! Each check is a line of the [`Report`]: passed, failed, or a note. A
//! manifest that cannot be read at all is a [`VerifyError`] instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tessera_frame::{FrameBuffer, OutputOptions};
use tessera_protocol::Rect;

use crate::clean;
use crate::manifest::{self, Confirmation, FrameManifest, ManifestTile};

/// What to check, and with what.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// A frame's manifest (`<stem>-NNNN.manifest.json`); the frame's files
    /// are looked for beside it.
    pub manifest: PathBuf,
    /// The frame's EXR (or PNG) file, if it is not beside the manifest.
    pub frame: Option<PathBuf>,
    /// The coordinator's certificate fingerprint: a manifest signed by any
    /// other key fails.
    pub pin: Option<String>,
    /// Re-render this many pixels through the guest (needs `scene` and
    /// `module`, and the `recheck` feature).
    pub recheck: Option<u32>,
    /// The job's scene (.glb, or .gltf, packed as `submit` packs it).
    pub scene: Option<PathBuf>,
    /// The job's module, or why there is none (said if a recheck needs it).
    pub module: Result<Module, String>,
    /// Seed of the pixels a recheck picks; default: from the manifest's
    /// signature, so a run is repeatable.
    pub seed: Option<u64>,
}

impl VerifyOptions {
    /// The manifest's checks with no pin, no recheck and the files beside it.
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        VerifyOptions {
            manifest: manifest.into(),
            frame: None,
            pin: None,
            recheck: None,
            scene: None,
            module: Err("no module given".into()),
            seed: None,
        }
    }
}

/// A guest module and where it came from (for messages).
#[derive(Clone, Debug)]
pub struct Module {
    pub bytes: Vec<u8>,
    pub origin: String,
}

/// Why a manifest could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a frame manifest: {detail}")]
    NotManifest { path: String, detail: String },
    #[error("{path}: manifest version {version}; this tessera reads up to {}", manifest::VERSION)]
    TooNew { path: String, version: u64 },
}

/// Failures listed one by one before the rest are counted.
const SHOWN: usize = 8;

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A heading: what is being checked.
    Heading,
    Pass,
    Fail,
    /// Something the reader should know that is not a failure.
    Note,
}

/// One line of a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub outcome: Outcome,
    pub text: String,
}

impl std::fmt::Display for Check {
    /// `✓ text`, `✗ text`, `- text`, or a heading as it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.outcome {
            Outcome::Heading => write!(f, "{}", self.text),
            Outcome::Pass => write!(f, "✓ {}", self.text),
            Outcome::Fail => write!(f, "✗ {}", self.text),
            Outcome::Note => write!(f, "- {}", self.text),
        }
    }
}

/// The checks run so far, in order; each is also handed to a sink as it
/// is made (the CLI prints them while a recheck renders).
pub struct Report<'a> {
    checks: Vec<Check>,
    sink: Box<dyn FnMut(&Check) + 'a>,
}

impl Default for Report<'_> {
    fn default() -> Self {
        Report::new(|_| {})
    }
}

impl<'a> Report<'a> {
    pub fn new(sink: impl FnMut(&Check) + 'a) -> Self {
        Report { checks: Vec::new(), sink: Box::new(sink) }
    }

    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// How many checks failed: the frame is verified when none did.
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| c.outcome == Outcome::Fail).count()
    }

    fn push(&mut self, outcome: Outcome, text: String) {
        let check = Check { outcome, text };
        (self.sink)(&check);
        self.checks.push(check);
    }

    fn heading(&mut self, what: impl AsRef<str>) {
        self.push(Outcome::Heading, what.as_ref().to_owned());
    }

    fn pass(&mut self, what: impl AsRef<str>) {
        self.push(Outcome::Pass, what.as_ref().to_owned());
    }

    fn fail(&mut self, what: impl AsRef<str>) {
        self.push(Outcome::Fail, what.as_ref().to_owned());
    }

    fn note(&mut self, what: impl AsRef<str>) {
        self.push(Outcome::Note, what.as_ref().to_owned());
    }

    /// One ✓ for `what`, or a ✗ per problem (the first few, then a count).
    fn all(&mut self, what: impl AsRef<str>, problems: &[String]) {
        if problems.is_empty() {
            self.pass(what);
            return;
        }
        for p in problems.iter().take(SHOWN) {
            self.fail(p);
        }
        if problems.len() > SHOWN {
            self.fail(format!("… and {} more like these", problems.len() - SHOWN));
        }
    }
}

fn short(hex: &str) -> String {
    clean(&hex.chars().take(16).collect::<String>())
}

/// A decoded frame: linear RGB (EXR) or 8-bit display RGB (PNG), row-major.
struct Pixels<T> {
    width: u32,
    height: u32,
    data: Vec<T>,
}

impl<T: Copy> Pixels<T> {
    #[cfg_attr(not(feature = "recheck"), allow(dead_code))]
    fn at(&self, x: u32, y: u32) -> T {
        self.data[y as usize * self.width as usize + x as usize]
    }

    fn region(&self, r: Rect) -> impl Iterator<Item = &T> {
        (r.y..r.y + r.height).flat_map(move |y| {
            let start = y as usize * self.width as usize + r.x as usize;
            self.data[start..start + r.width as usize].iter()
        })
    }
}

fn read_exr(path: &Path) -> Result<Pixels<[f32; 3]>, String> {
    use exr::prelude::Vec2;
    let image = exr::prelude::read_first_rgba_layer_from_file(
        path,
        |size, _| (size, vec![[0.0f32; 3]; size.width() * size.height()]),
        |(size, px): &mut (Vec2<usize>, Vec<[f32; 3]>), pos: Vec2<usize>, (r, g, b, _a): (f32, f32, f32, f32)| {
            px[pos.y() * size.width() + pos.x()] = [r, g, b];
        },
    )
    .map_err(|e| e.to_string())?;
    let (size, data) = image.layer_data.channel_data.pixels;
    Ok(Pixels { width: size.width() as u32, height: size.height() as u32, data })
}

fn read_png(path: &Path) -> Result<Pixels<[u8; 3]>, String> {
    let img = image::open(path).map_err(|e| e.to_string())?.to_rgb8();
    let (width, height) = img.dimensions();
    let data = img.as_raw().chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
    Ok(Pixels { width, height, data })
}

fn file_hash(path: &Path) -> std::io::Result<(blake3::Hash, u64)> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok((h.finalize(), std::fs::metadata(path)?.len()))
}

#[cfg_attr(not(feature = "recheck"), allow(dead_code))]
fn bits(p: [f32; 3]) -> [u32; 3] {
    p.map(f32::to_bits)
}

/// `tessera verify`.
/// Checks the frame `options.manifest` describes, each check a line of
/// `report`; returns the manifest. The frame is verified when
/// [`Report::failed`] is 0.
pub fn verify(options: &VerifyOptions, report: &mut Report<'_>) -> Result<FrameManifest, VerifyError> {
    let path = options.manifest.display().to_string();
    let text = std::fs::read(&options.manifest).map_err(|source| VerifyError::Read { path: path.clone(), source })?;
    let not_manifest = |detail: String| VerifyError::NotManifest { path: path.clone(), detail };
    let value: Value = serde_json::from_slice(&text).map_err(|e| not_manifest(format!("not JSON ({e})")))?;
    match (value.get("schema").and_then(Value::as_str), value.get("version").and_then(Value::as_u64)) {
        (Some(manifest::SCHEMA), Some(v)) if v <= u64::from(manifest::VERSION) => {}
        (Some(manifest::SCHEMA), Some(version)) => return Err(VerifyError::TooNew { path, version }),
        _ => return Err(not_manifest(format!("no \"schema\": {:?}", manifest::SCHEMA))),
    }
    let m: FrameManifest = serde_json::from_value(value.clone())
        .map_err(|e| not_manifest(format!("missing or malformed fields ({e})")))?;
    let pixels = u64::from(m.width) * u64::from(m.height);
    if pixels == 0 || pixels > tessera_frame::MAX_PIXELS {
        return Err(not_manifest(format!("a {}x{} frame is out of range", m.width, m.height)));
    }
    let dir = match options.manifest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };

    report.heading(format!(
        "manifest {path}: job {} ({}), frame {}, {}x{}, {} spp, seed {}, {} tiles",
        m.job.id,
        clean(&m.job.name),
        m.frame,
        m.width,
        m.height,
        m.spp,
        m.seed,
        m.tiles.len()
    ));

    // 1. The coordinator's signature, and the pin.
    match manifest::verify_signature(&value) {
        Ok(signer) => report.pass(format!(
            "coordinator signature (ed25519 key {}…, certificate fingerprint {})",
            short(&manifest::hex(&signer.public_key)),
            signer.fingerprint
        )),
        Err(e) => report.fail(format!("coordinator signature: {e}")),
    }
    match &options.pin {
        Some(pin) => match tessera_protocol::proof::parse_fingerprint(pin) {
            Ok(pin) if pin.eq_ignore_ascii_case(&m.coordinator.fingerprint) => {
                report.pass(format!("the coordinator is the pinned one ({pin})"))
            }
            Ok(pin) => report.fail(format!(
                "pin: the manifest was signed by the coordinator with fingerprint {}, not the pinned {pin}",
                clean(&m.coordinator.fingerprint)
            )),
            Err(e) => report.fail(format!("--pin: {e}")),
        },
        None => report.note(
            "no --pin: any coordinator's signature passes; pass --pin FINGERPRINT (your farm's, as \
             `tessera coordinator` prints it) to require yours",
        ),
    }

    // 2. Tile signatures and the coordinator's recorded checks.
    check_tiles(&m, report);

    // 3. Coverage.
    check_coverage(&m, report);

    // 4. Files.
    let paths = check_files(&m, &dir, options.frame.as_deref(), report);

    // 5. Pixels.
    let exr = paths.get("exr").and_then(|path| decoded(path, "EXR", read_exr(path), &m, report));
    let png = paths.get("png").and_then(|path| decoded(path, "PNG", read_png(path), &m, report));
    let output = OutputOptions { view: m.view.parse().unwrap_or_default(), exposure: m.exposure as f32 };
    match &exr {
        Some(exr) => {
            // A progressive frame's tiles bind the frame's pixels with the
            // samples through their pass: the last pass's are the file's.
            let last = |t: &&ManifestTile| u64::from(t.samples.start) + u64::from(t.samples.count) == u64::from(m.spp);
            let checked = m.tiles.iter().filter(last).count();
            let problems: Vec<String> = m
                .tiles
                .iter()
                .filter(last)
                .filter(|t| inside(t.rect, &m))
                .filter_map(|t| {
                    let got = manifest::pixels_blake3(exr.region(t.rect));
                    (!got.eq_ignore_ascii_case(&t.pixels_blake3)).then(|| {
                        format!(
                            "tile {} ({},{} {}x{}): the EXR's pixels hash to {}…, the manifest's pixels_blake3 is \
                             {}…: the EXR's pixels are not the ones the worker committed to",
                            t.index,
                            t.rect.x,
                            t.rect.y,
                            t.rect.width,
                            t.rect.height,
                            short(&got),
                            short(&t.pixels_blake3)
                        )
                    })
                })
                .collect();
            let what = if checked == m.tiles.len() {
                format!("all {checked} tiles'")
            } else {
                format!("the {checked} last-pass tiles' (of {})", m.tiles.len())
            };
            report.all(format!("EXR pixels match {what} pixel hashes"), &problems);
            if let Some(png) = &png {
                check_png_against_exr("the PNG", exr, png, &output, &m, report);
            }
        }
        None if m.files.contains_key("exr") => {}
        None => report.note("no EXR listed: the tiles' pixel hashes cannot be checked against an 8-bit PNG"),
    }

    // 5b. The denoised image, re-derived from the raw EXR.
    check_denoised(&m, &paths, &output, report);

    // 6. Re-rendering.
    if let Some(n) = options.recheck {
        let frame = Decoded { exr: exr.as_ref(), png: png.as_ref(), output: &output };
        match recheck(&m, options, n, &frame) {
            Ok(Ok(msg)) => report.pass(msg),
            Ok(Err(problems)) => report.all("", &problems),
            Err(e) => report.fail(format!("--recheck: {e}")),
        }
    }
    Ok(m)
}

/// A frame file as decoded, if it decoded at the frame's size; else why
/// not, in the report.
fn decoded<T>(
    path: &Path,
    format: &str,
    read: Result<Pixels<T>, String>,
    m: &FrameManifest,
    report: &mut Report<'_>,
) -> Option<Pixels<T>> {
    match read {
        Ok(p) if (p.width, p.height) == (m.width, m.height) => Some(p),
        Ok(p) => {
            let (w, h) = (p.width, p.height);
            report.fail(format!("{}: {w}x{h}, but the frame is {}x{}", path.display(), m.width, m.height));
            None
        }
        Err(e) => {
            report.fail(format!("{}: does not decode as {format}: {e}", path.display()));
            None
        }
    }
}

fn inside(r: Rect, m: &FrameManifest) -> bool {
    r.width > 0
        && r.height > 0
        && r.x.checked_add(r.width).is_some_and(|e| e <= m.width)
        && r.y.checked_add(r.height).is_some_and(|e| e <= m.height)
}

fn check_tiles(m: &FrameManifest, report: &mut Report<'_>) {
    let mut problems = Vec::new();
    let mut workers = BTreeSet::new();
    let (mut spot_checked, mut spot_pixels, mut by_coordinator) = (0usize, 0u64, 0usize);
    let mut recorded = Vec::new();
    // GPU tiles whose spot check was outside the tolerance, kept after a
    // second opinion: the check's outcome and who confirmed, both said.
    let mut settled = Vec::new();
    let (mut by_replica, mut by_render, mut unsigned) = (0usize, 0usize, 0usize);
    for t in &m.tiles {
        problems.extend(manifest::tile_signature_problems(t, &m.coordinator.public_key));
        workers.insert(t.worker.to_ascii_lowercase());
        let name = format!("tile {}", t.index);
        match t.checks.signature.as_str() {
            manifest::SIGNATURE_VERIFIED => {}
            manifest::SIGNATURE_COORDINATOR => by_coordinator += 1,
            other => recorded.push(format!("{name}: the coordinator recorded its signature as {:?}", clean(other))),
        }
        let confirmation = match &t.confirmed_by {
            Some(Confirmation::Replica { worker, signature, .. }) if signature.is_empty() => {
                unsigned += 1;
                format!("a replica whose signature was not recorded ({}…), which cannot be checked", short(worker))
            }
            Some(Confirmation::Replica { worker, .. }) => {
                by_replica += 1;
                format!(
                    "an equal result from replica worker {}…, whose signature of the same commitment verifies",
                    short(worker)
                )
            }
            Some(Confirmation::Coordinator) => {
                by_render += 1;
                "the coordinator's own render of the whole tile".to_string()
            }
            None => String::new(),
        };
        match &t.checks.spot_check {
            Some(s) if s.passed => {
                spot_checked += 1;
                spot_pixels += u64::from(s.pixels);
            }
            Some(s) if t.gpu.is_some() && t.confirmed_by.is_some() => settled.push(format!(
                "{name} (GPU): its spot check was outside the tolerance of the coordinator's CPU render \
                 (epoch {}, {} pixels); kept after {confirmation}",
                s.epoch, s.pixels
            )),
            Some(s) => recorded.push(format!("{name}: its spot check failed (epoch {})", s.epoch)),
            None => {}
        }
    }
    report.all(
        format!(
            "{} tile signatures verify over their commitments ({} worker{})",
            m.tiles.len(),
            workers.len(),
            if workers.len() == 1 { "" } else { "s" }
        ),
        &problems,
    );
    let workers_tiles = m.tiles.len() - by_coordinator;
    let checked = spot_checked + settled.len();
    let spot = if checked == 0 {
        "no spot checks (the farm ran without them)".to_string()
    } else if !settled.is_empty() {
        format!(
            "{spot_checked} of {checked} spot checks passed and {} GPU tiles outside the tolerance were kept after a \
             second opinion (below)",
            settled.len()
        )
    } else if checked == workers_tiles {
        format!("all spot checks passed ({spot_pixels} pixels re-rendered by the coordinator)")
    } else {
        format!("{checked} of {workers_tiles} workers' tiles spot-checked, all passed")
    };
    let own = if by_coordinator > 0 {
        format!("; {by_coordinator} tiles rendered by the coordinator itself (workers disagreed), signed by it")
    } else {
        String::new()
    };
    report.all(format!("the coordinator's checks: every signature verified on arrival, {spot}{own}"), &recorded);
    if by_replica + by_render + unsigned > 0 {
        let mut parts = Vec::new();
        if by_replica > 0 {
            parts.push(format!("{by_replica} by an independent replica's equal result (its signature verifies)"));
        }
        if by_render > 0 {
            parts.push(format!("{by_render} by the coordinator's own render"));
        }
        if unsigned > 0 {
            parts.push(format!("{unsigned} by a replica whose signature was not recorded"));
        }
        report.note(format!(
            "second opinions: {} tiles confirmed whole, {}",
            by_replica + by_render + unsigned,
            parts.join(", ")
        ));
    }
    for line in settled.iter().take(SHOWN) {
        report.note(line);
    }
    if settled.len() > SHOWN {
        report.note(format!("… and {} more GPU tiles like these", settled.len() - SHOWN));
    }
}

/// Whether tile `t` may be counted: a problem for a tile listed twice (it
/// is counted still) or lying outside the frame (it is not).
fn listed_once_inside(
    t: &ManifestTile,
    m: &FrameManifest,
    indices: &mut BTreeSet<u32>,
    problems: &mut Vec<String>,
) -> bool {
    if !indices.insert(t.index) {
        problems.push(format!("tile {} is listed twice", t.index));
    }
    if !inside(t.rect, m) {
        problems.push(format!(
            "tile {}: {},{} {}x{} is not inside the {}x{} frame",
            t.index, t.rect.x, t.rect.y, t.rect.width, t.rect.height, m.width, m.height
        ));
        return false;
    }
    true
}

fn check_coverage(m: &FrameManifest, report: &mut Report<'_>) {
    if m.tiles.iter().any(|t| (t.samples.start, t.samples.count) != (0, m.spp)) {
        return check_pass_coverage(m, report);
    }
    let (w, h) = (m.width as usize, m.height as usize);
    let mut covered = vec![0u64; (w * h).div_ceil(64)];
    let mut problems = Vec::new();
    let mut overlaps = 0u64;
    let mut count = 0u64;
    let mut indices = BTreeSet::new();
    for t in &m.tiles {
        if !listed_once_inside(t, m, &mut indices, &mut problems) {
            continue;
        }
        if (t.samples.start, t.samples.count) != (0, m.spp) {
            problems.push(format!(
                "tile {}: samples {}..{}, not the frame's 0..{}",
                t.index,
                t.samples.start,
                u64::from(t.samples.start) + u64::from(t.samples.count),
                m.spp
            ));
        }
        for y in t.rect.y..t.rect.y + t.rect.height {
            for x in t.rect.x..t.rect.x + t.rect.width {
                let i = y as usize * w + x as usize;
                let bit = 1u64 << (i % 64);
                if covered[i / 64] & bit != 0 {
                    overlaps += 1;
                } else {
                    covered[i / 64] |= bit;
                    count += 1;
                }
            }
        }
    }
    if overlaps > 0 {
        problems.push(format!("{overlaps} pixels are covered by more than one tile"));
    }
    let total = (w * h) as u64;
    if count < total {
        problems.push(format!("{} of the frame's {total} pixels are in no tile", total - count));
    }
    report.all(
        format!("the tiles cover the {}x{} frame exactly once, all {} samples each", m.width, m.height, m.spp),
        &problems,
    );
}

/// A progressive frame's coverage: at every pixel, the tiles over it, by
/// index, carry consecutive sample ranges that start at 0 and end at the
/// frame's spp (so they add up to the frame, as `SampleRange::passes`
/// cuts it).
fn check_pass_coverage(m: &FrameManifest, report: &mut Report<'_>) {
    let (w, h) = (m.width as usize, m.height as usize);
    // The next sample each pixel expects.
    let mut next = vec![0u32; w * h];
    let mut problems = Vec::new();
    let (mut out_of_order, mut passes) = (0u64, BTreeSet::new());
    let mut indices = BTreeSet::new();
    let mut tiles: Vec<&ManifestTile> = m.tiles.iter().collect();
    tiles.sort_by_key(|t| t.index);
    for t in tiles {
        if !listed_once_inside(t, m, &mut indices, &mut problems) {
            continue;
        }
        passes.insert((t.samples.start, t.samples.count));
        for y in t.rect.y..t.rect.y + t.rect.height {
            for x in t.rect.x..t.rect.x + t.rect.width {
                let i = y as usize * w + x as usize;
                if next[i] != t.samples.start {
                    out_of_order += 1;
                }
                next[i] = t.samples.start.saturating_add(t.samples.count);
            }
        }
    }
    if out_of_order > 0 {
        problems.push(format!(
            "{out_of_order} pixels' tiles do not carry consecutive sample ranges from 0 (a gap, an overlap or a pass \
             out of order)"
        ));
    }
    let lacking = next.iter().filter(|n| **n != m.spp).count();
    if lacking > 0 {
        problems.push(format!("{lacking} of the frame's {} pixels do not have all {} samples", w * h, m.spp));
    }
    report.all(
        format!(
            "the tiles cover the {}x{} frame in {} sample passes, all {} samples at every pixel",
            m.width,
            m.height,
            passes.len(),
            m.spp
        ),
        &problems,
    );
}

/// Checks the listed files; returns where each readable one is, by format.
fn check_files(
    m: &FrameManifest,
    dir: &Path,
    frame: Option<&Path>,
    report: &mut Report<'_>,
) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let prefix = format!("{}-{:04}.", m.stem, m.frame);
    let manifest_name = manifest::file_name(&m.stem, m.frame);
    let stem_ok = !m.stem.is_empty() && !m.stem.contains(['/', '\\', ':']) && !m.stem.chars().all(|c| c == '.');
    if !stem_ok || m.stem.chars().any(char::is_control) {
        report.fail(format!("the manifest names the frame {:?}, not a plain file name", clean(&m.stem)));
        return found;
    }
    let mut listed = BTreeSet::new();
    for (ext, file) in &m.files {
        let expected = format!("{prefix}{ext}");
        if file.name != expected {
            report.fail(format!("the {} file is listed as {:?}, not {expected:?}", clean(ext), clean(&file.name)));
            continue;
        }
        listed.insert(file.name.clone());
        let path = match frame {
            Some(p) if p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)) => p.to_path_buf(),
            _ => dir.join(&file.name),
        };
        match file_hash(&path) {
            Ok((hash, bytes)) => {
                if hash.to_hex().eq_ignore_ascii_case(&file.blake3) && bytes == file.bytes {
                    report.pass(format!("{}: blake3 and size ({bytes} bytes) as listed", path.display()));
                } else {
                    report.fail(format!(
                        "{}: blake3 {}… ({bytes} bytes), the manifest lists {}… ({} bytes): the file was changed",
                        path.display(),
                        short(hash.to_hex().as_str()),
                        short(&file.blake3),
                        file.bytes
                    ));
                }
                found.insert(ext.clone(), path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.fail(format!("{}: missing (the manifest lists it)", path.display()))
            }
            Err(e) => report.fail(format!("{}: {e}", path.display())),
        }
    }
    // Another format of the frame beside the manifest that it does not list.
    let mut unlisted = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name != manifest_name && !listed.contains(&name) {
                unlisted.push(format!("{}: beside the manifest but not listed in it", dir.join(&name).display()));
            }
        }
    }
    unlisted.sort();
    report.all(format!("no unlisted file named {prefix}* beside the manifest"), &unlisted);
    found
}

/// A denoised frame's files: the denoised EXR must be what the manifest's
/// denoiser makes of the raw EXR's colour and guides, bit for bit (the
/// denoiser is deterministic CPU code), and the denoised PNG that EXR
/// through the view transform. So the denoised image, which no worker
/// signed, is bound to the raw pixels that the tiles' proofs cover.
fn check_denoised(
    m: &FrameManifest,
    paths: &BTreeMap<String, PathBuf>,
    options: &OutputOptions,
    report: &mut Report<'_>,
) {
    use tessera_frame::DENOISER;
    let (exr_key, png_key) = ("denoised.exr", "denoised.png");
    let listed = m.files.contains_key(exr_key) || m.files.contains_key(png_key);
    if !listed {
        if m.denoiser.is_some() {
            report.fail("the manifest names a denoiser but lists no denoised file");
        }
        return;
    }
    match m.denoiser.as_deref() {
        Some(DENOISER) => {}
        Some(other) => {
            report.fail(format!(
                "the denoised files were made by {:?}; this tessera has {DENOISER} and cannot re-derive them",
                clean(other)
            ));
            return;
        }
        None => {
            report.fail("denoised files are listed, but the manifest names no denoiser");
            return;
        }
    }
    let denoised = match paths.get(exr_key) {
        Some(path) => match FrameBuffer::read_exr(path) {
            Ok(f) if (f.width, f.height) == (m.width, m.height) => Some(f),
            Ok(f) => {
                report.fail(format!(
                    "{}: {}x{}, but the frame is {}x{}",
                    path.display(),
                    f.width,
                    f.height,
                    m.width,
                    m.height
                ));
                None
            }
            Err(e) => {
                report.fail(format!("{e}"));
                None
            }
        },
        None => None,
    };
    match (paths.get("exr"), &denoised) {
        (Some(raw_path), Some(denoised)) => match FrameBuffer::read_exr(raw_path) {
            Ok(raw) if raw.guides.is_none() => report.fail(format!(
                "{}: the raw EXR has no albedo/normal guide channels, so its denoised image cannot be re-derived",
                raw_path.display()
            )),
            Ok(raw) => match raw.denoised() {
                Ok(again) => {
                    let first = again.color.iter().zip(&denoised.color).position(|(a, b)| a.to_bits() != b.to_bits());
                    match first {
                        None => report.pass(format!(
                            "the denoised EXR is {DENOISER} of the raw EXR's colour, albedo and normal, bit for bit"
                        )),
                        Some(i) => {
                            let p = (i / 3) as u32;
                            report.fail(format!(
                                "denoised EXR pixel ({}, {}) is not {DENOISER} of the raw EXR: the denoised image \
                                 is not derived from this frame",
                                p % m.width,
                                p / m.width
                            ))
                        }
                    }
                }
                Err(e) => report.fail(format!("denoising the raw EXR again: {e}")),
            },
            Err(e) => report.fail(format!("{e}")),
        },
        (None, _) if !m.files.contains_key("exr") => {
            report.note("no raw EXR listed: the denoised image cannot be re-derived from an 8-bit PNG")
        }
        _ => {}
    }
    if let (Some(denoised), Some(path)) = (&denoised, paths.get(png_key)) {
        match read_png(path) {
            Ok(png) if (png.width, png.height) == (m.width, m.height) => {
                let linear = Pixels {
                    width: m.width,
                    height: m.height,
                    data: denoised.color.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
                };
                check_png_against_exr("the denoised PNG", &linear, &png, options, m, report);
            }
            Ok(png) => report.fail(format!(
                "{}: {}x{}, but the frame is {}x{}",
                path.display(),
                png.width,
                png.height,
                m.width,
                m.height
            )),
            Err(e) => report.fail(format!("{}: does not decode as PNG: {e}", path.display())),
        }
    }
}

fn check_png_against_exr(
    label: &str,
    exr: &Pixels<[f32; 3]>,
    png: &Pixels<[u8; 3]>,
    options: &OutputOptions,
    m: &FrameManifest,
    report: &mut Report<'_>,
) {
    let display = display8(exr, options);
    let first = (0..display.len()).find(|&i| display[i] != png.data[i]);
    let what = format!("{label} equals its EXR through the {} view transform at {} EV", options.view, options.exposure);
    match first {
        None => report.pass(what),
        Some(i) => {
            let (x, y) = (i as u32 % m.width, i as u32 / m.width);
            let differ = (0..display.len()).filter(|&i| display[i] != png.data[i]).count();
            report.fail(format!(
                "{label}: pixel ({x}, {y}) is {:?}, its EXR through {} gives {:?} ({differ} pixel{} differ{})",
                png.data[i],
                options.view,
                display[i],
                if differ == 1 { "" } else { "s" },
                if differ == 1 { "s" } else { "" }
            ));
        }
    }
}

/// 8-bit display values of linear pixels, as the farm makes its PNG.
fn display8(linear: &Pixels<[f32; 3]>, options: &OutputOptions) -> Vec<[u8; 3]> {
    let n = linear.data.len();
    let mut fb = FrameBuffer::new(linear.width, linear.height);
    for (i, p) in linear.data.iter().enumerate() {
        fb.color[3 * i..3 * i + 3].copy_from_slice(p);
        fb.weight[i] = 1.0;
    }
    let bytes = fb.to_display8(options);
    (0..n).map(|i| [bytes[3 * i], bytes[3 * i + 1], bytes[3 * i + 2]]).collect()
}

/// The frame's decoded files, for a recheck to compare with.
#[cfg_attr(not(feature = "recheck"), allow(dead_code))]
struct Decoded<'a> {
    exr: Option<&'a Pixels<[f32; 3]>>,
    png: Option<&'a Pixels<[u8; 3]>>,
    output: &'a OutputOptions,
}

#[cfg(feature = "recheck")]
mod recheck;
#[cfg(feature = "recheck")]
use recheck::recheck;

/// Without the sandbox (the `recheck` feature), a recheck cannot run.
#[cfg(not(feature = "recheck"))]
fn recheck(
    _: &FrameManifest,
    _: &VerifyOptions,
    _: u32,
    _: &Decoded<'_>,
) -> Result<Result<String, Vec<String>>, String> {
    Err("this build of tessera-client has no sandbox to re-render pixels in (the `recheck` feature)".into())
}
