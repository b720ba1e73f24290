//! The store writer: the one thread that owns the farm's [`Store`].
//!
//! Results arrive one by one from the core loop and are committed in
//! batches (one SQLite transaction, one fsync, per batch: group commit);
//! only then is each worker told its tile was accepted, and the core told
//! which tiles are durable. Frames are assembled on a second thread so a
//! PNG encode never delays a commit.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use tessera_protocol::wire::TileAck;
use tessera_protocol::{ContentHash, TileAccumulators};
use tokio::sync::mpsc as tokio_mpsc;

use super::job::{Format, JobSpec};
use super::lock;
use super::manifest::ManifestSigner;
use super::msg::{ConnCmd, CoreMsg, PendingTile, WriterMsg, COORDINATOR};
use tessera_client::manifest::{self, ManifestFile};
use tessera_frame::FrameBuffer;
use tessera_store::{FrameRecord, LogLevel, Store, StoreError, TileCredit, TileRecord};

/// Unix milliseconds, for records.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Starts the writer and the frame assembler; they end when every sender
/// of the returned channel is dropped.
pub fn spawn(
    store: Arc<Mutex<Store>>,
    core: tokio_mpsc::UnboundedSender<CoreMsg>,
    frames_dir: PathBuf,
    timings: Arc<super::status::CommitTimings>,
) -> (mpsc::Sender<WriterMsg>, Vec<std::thread::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<WriterMsg>();
    let (frame_tx, frame_rx) = mpsc::channel::<Assemble>();
    let (alive, checkpoints) = mpsc::channel::<()>();
    let checkpointer = {
        let other = lock(&store).reopen();
        if let Err(e) = lock(&store).defer_housekeeping() {
            tracing::warn!(error = %e, "cannot move housekeeping out of commits; commits may stall on it");
        }
        std::thread::Builder::new()
            .name("store-checkpointer".into())
            .spawn(move || checkpoint_loop(other, checkpoints))
            .expect("spawning the checkpointer")
    };
    let writer = {
        let (store, core) = (store.clone(), core.clone());
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer_loop(&store, &core, rx, frame_tx, &timings);
                drop(alive);
            })
            .expect("spawning the store writer")
    };
    // The coordinator's QUIC identity (made by `Farm::start` before this)
    // signs frame manifests; read here so nothing else has to pass it along.
    let data_dir = lock(&store).data_dir().to_path_buf();
    let assembler = std::thread::Builder::new()
        .name("frame-assembler".into())
        .spawn(move || {
            let signer = ManifestSigner::load(&data_dir);
            if let Err(e) = &signer {
                tracing::error!(error = %e, "no key to sign frame manifests: frames cannot be written");
            }
            let mut queue = AssemblyQueue::default();
            while let Some(work) = queue.next(&frame_rx) {
                match work {
                    Assemble::Frame { job, slot, spec } => {
                        let signer = signer.as_ref().map_err(String::as_str);
                        let error =
                            write_frame(&store, &frames_dir, job, slot, &spec, signer).err().map(|e| e.to_string());
                        let _ = core.send(CoreMsg::FrameWritten { job, frame_slot: slot, error });
                    }
                    Assemble::Preview { job, slot, through, spec } => {
                        // A preview that cannot be made is not the job's
                        // failure: the frame itself still comes.
                        match write_preview(&store, job, slot, through, &spec) {
                            Ok(()) => {
                                let _ = core.send(CoreMsg::PreviewWritten { job, frame_slot: slot, pass: through });
                            }
                            Err(e) => tracing::warn!(job, frame_slot = slot, pass = through, error = %e, "preview"),
                        }
                    }
                }
            }
        })
        .expect("spawning the frame assembler");
    (tx, vec![writer, assembler, checkpointer])
}

/// How often the WAL is copied back into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs the store's housekeeping (SQLite: passive WAL checkpoints) on a
/// connection of its own until the writer ends (its end of `alive` drops).
fn checkpoint_loop(store: Result<Store, StoreError>, alive: mpsc::Receiver<()>) {
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "the checkpointer cannot open the store; the WAL will grow until restart");
            return;
        }
    };
    while let Err(mpsc::RecvTimeoutError::Timeout) = alive.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = store.housekeeping() {
            tracing::warn!(error = %e, "store housekeeping (WAL checkpoint) failed");
        }
    }
    let _ = store.housekeeping();
}

/// Work for the frame assembler: a frame, or a progressive frame's preview.
enum Assemble {
    Frame { job: u64, slot: usize, spec: Arc<JobSpec> },
    Preview { job: u64, slot: usize, through: usize, spec: Arc<JobSpec> },
}

impl Assemble {
    fn frame(&self) -> (u64, usize) {
        match self {
            Assemble::Frame { job, slot, .. } | Assemble::Preview { job, slot, .. } => (*job, *slot),
        }
    }
}

/// The assembler's order of work. Frames come before previews (a job
/// waits for its frames; a preview only shows progress), and a preview is
/// dropped when a later one of its frame is queued or the frame itself is
/// queued or written: on a busy farm, previews never hold frames up and the
/// assembler never makes a picture nobody will see.
#[derive(Default)]
struct AssemblyQueue {
    pending: std::collections::VecDeque<Assemble>,
    /// Frames written by this assembler (their previews are stale).
    written: std::collections::BTreeSet<(u64, usize)>,
}

impl AssemblyQueue {
    /// The next work, waiting for some when none is queued; `None` once the
    /// writer has gone and everything queued is done.
    fn next(&mut self, rx: &mpsc::Receiver<Assemble>) -> Option<Assemble> {
        loop {
            if self.pending.is_empty() {
                self.pending.push_back(rx.recv().ok()?);
            }
            self.pending.extend(rx.try_iter());
            if let Some(i) = self.pending.iter().position(|w| matches!(w, Assemble::Frame { .. })) {
                let work = self.pending.remove(i)?;
                self.written.insert(work.frame());
                return Some(work);
            }
            let work = self.pending.pop_front()?;
            let key = work.frame();
            if self.written.contains(&key) || self.pending.iter().any(|w| w.frame() == key) {
                continue;
            }
            return Some(work);
        }
    }
}

fn writer_loop(
    store: &Mutex<Store>,
    core: &tokio_mpsc::UnboundedSender<CoreMsg>,
    rx: mpsc::Receiver<WriterMsg>,
    frames: mpsc::Sender<Assemble>,
    timings: &super::status::CommitTimings,
) {
    let commit = |store: &Mutex<Store>, core: &tokio_mpsc::UnboundedSender<CoreMsg>, batch: &mut Vec<PendingTile>| {
        commit(store, core, batch, timings)
    };
    let mut batch: Vec<PendingTile> = Vec::new();
    let mut logs: Vec<(u64, u64, LogLevel, String)> = Vec::new();
    let mut barriers = Vec::new();
    let handle = |msg: WriterMsg, batch: &mut Vec<PendingTile>, logs: &mut Vec<_>, barriers: &mut Vec<_>| match msg {
        WriterMsg::Tile(t) => batch.push(t),
        WriterMsg::Barrier(reply) => barriers.push(reply),
        WriterMsg::Log { job, level, message } => logs.push((job, unix_ms(), level, message)),
        WriterMsg::FailedCheck { identity, job, tile, reason, evidence } => {
            match lock(store).record_failed_check(&identity, job, tile, &reason, &evidence, unix_ms()) {
                Ok(true) => {
                    tracing::error!(%identity, "worker quarantined after repeated failed checks");
                    let _ = core.send(CoreMsg::Quarantined { identity });
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "recording a failed check"),
            }
        }
        WriterMsg::JobState { job, state, error } => {
            // Tiles before the state change: a job is never Done in the
            // store while its last tiles are not.
            commit(store, core, batch);
            if let Err(e) = lock(store).set_job_state(job, state, error.as_deref(), unix_ms()) {
                tracing::error!(job, error = %e, "recording the job's state");
            }
        }
        WriterMsg::Frame { job, frame_slot, spec } => {
            commit(store, core, batch);
            let _ = frames.send(Assemble::Frame { job, slot: frame_slot, spec });
        }
        WriterMsg::Preview { job, frame_slot, through, spec } => {
            commit(store, core, batch);
            let _ = frames.send(Assemble::Preview { job, slot: frame_slot, through, spec });
        }
    };
    while let Ok(msg) = rx.recv() {
        handle(msg, &mut batch, &mut logs, &mut barriers);
        // Group commit: whatever arrived during the last fsync goes into
        // this one transaction.
        while let Ok(msg) = rx.try_recv() {
            handle(msg, &mut batch, &mut logs, &mut barriers);
        }
        commit(store, core, &mut batch);
        if !logs.is_empty() {
            if let Err(e) = lock(store).append_job_log(&logs) {
                tracing::warn!(error = %e, lines = logs.len(), "could not store job log lines");
            }
            logs.clear();
        }
        for reply in barriers.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// Commits `batch` in one transaction, then acknowledges it.
fn commit(
    store: &Mutex<Store>,
    core: &tokio_mpsc::UnboundedSender<CoreMsg>,
    batch: &mut Vec<PendingTile>,
    timings: &super::status::CommitTimings,
) {
    if batch.is_empty() {
        return;
    }
    let records: Vec<TileRecord> = batch
        .iter()
        .map(|t| {
            let data = postcard::to_allocvec(&t.result.accumulators).unwrap_or_default();
            TileRecord {
                job: t.job,
                index: t.index,
                frame: t.frame,
                hash: ContentHash::of(&data).0,
                data,
                worker: t.worker.clone(),
                fuel: t.result.fuel,
                millis: t.result.millis,
                proof: Some(serde_json::to_string(&t.proof).unwrap_or_default()),
                credit: (t.worker != COORDINATOR).then(|| TileCredit {
                    credit: t.proof.credit(t.result.accumulators.rect.pixel_count(), t.result.fuel),
                    gpu: t.proof.gpu.is_some(),
                    commitment: t.result.commitment,
                    time_ms: unix_ms(),
                }),
                also_credit: t.replica.as_ref().map(|r| {
                    let credit = TileCredit {
                        credit: r.proof.credit(t.result.accumulators.rect.pixel_count(), t.result.fuel),
                        gpu: r.proof.gpu.is_some(),
                        commitment: r.commitment,
                        time_ms: unix_ms(),
                    };
                    (r.identity.clone(), credit)
                }),
            }
        })
        .collect();
    let mut store = lock(store);
    let started = std::time::Instant::now();
    let outcome = store.record_tiles(&records);
    timings.record(started.elapsed());
    drop(store);
    match outcome {
        Ok(_) => {
            let tiles = batch.iter().map(|t| (t.job, t.index, t.worker.clone())).collect();
            for t in batch.drain(..) {
                if let Some(acks) = &t.acks {
                    let _ = acks.send(ConnCmd::Ack(t.result.lease, TileAck::Accepted));
                }
                if let Some(r) = &t.replica {
                    if let Some(acks) = &r.acks {
                        let _ = acks.send(ConnCmd::Ack(r.lease, TileAck::Accepted));
                    }
                }
            }
            let _ = core.send(CoreMsg::Persisted { tiles });
        }
        Err(e) => {
            // Not durable, so not acknowledged; the scheduler already counts
            // these tiles done, so the job cannot finish without them: say so.
            tracing::error!(error = %e, tiles = batch.len(), "could not store tile results");
            for t in batch.drain(..) {
                let reason = format!("the coordinator could not store it: {e}");
                if let Some(acks) = &t.acks {
                    let _ = acks.send(ConnCmd::Ack(t.result.lease, TileAck::Rejected { reason }));
                }
                let _ = core.send(CoreMsg::TileLost { job: t.job, error: e.to_string() });
            }
        }
    }
}

/// Why a frame could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("tile {index} of the frame is missing")]
    Missing { index: u32 },
    #[error("tile {index}: stored bytes do not decode: {detail}")]
    Decode { index: u32, detail: String },
    #[error("{0}")]
    Assemble(#[from] tessera_frame::TileOutsideFrame),
    #[error("{0}")]
    Write(#[from] tessera_frame::WriteError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the frame's manifest: {0}")]
    Manifest(String),
    #[error("denoising the frame: {0}")]
    Denoise(#[from] tessera_frame::DenoiseError),
}

pub use tessera_client::manifest::DENOISED;

/// The directory a job's frames are exported to.
pub fn job_dir(frames_dir: &Path, job: u64) -> PathBuf {
    frames_dir.join(format!("job-{job}"))
}

/// A frame's exported file name: as `tessera render` names it.
pub fn frame_file(spec: &JobSpec, frame: i32, ext: &str) -> String {
    format!("{}-{frame:04}.{ext}", frame_stem(spec))
}

/// The start of a job's frame file names: the scene's file stem, with
/// anything but letters, digits, `-`, `_` and `.` replaced, never `..` or empty.
pub fn frame_stem(spec: &JobSpec) -> String {
    let stem = Path::new(&spec.name).file_stem().map_or("frame".into(), |s| s.to_string_lossy().into_owned());
    let stem: String = stem.chars().map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if stem.is_empty() || stem.chars().all(|c| c == '.') {
        "frame".into()
    } else {
        stem
    }
}

/// What assembling the frame at `slot` starts from: the job's plan, the
/// frame's number, its stored tiles by index, and an empty buffer (with
/// the denoiser's guides if the job is denoised).
fn frame_inputs(
    store: &Mutex<Store>,
    job: u64,
    slot: usize,
    spec: &JobSpec,
) -> Result<(super::job::JobPlan, i32, Vec<TileRecord>, FrameBuffer), FrameError> {
    let plan = spec.plan().map_err(|e| FrameError::Decode { index: 0, detail: e.to_string() })?;
    let frame = plan.frames[slot];
    let tiles = lock(store).frame_tiles(job, frame)?;
    let buffer = if spec.denoise {
        FrameBuffer::with_guides(spec.width, spec.height)
    } else {
        FrameBuffer::new(spec.width, spec.height)
    };
    Ok((plan, frame, tiles, buffer))
}

/// A stored tile's accumulators, checked against the hash it was stored under.
fn decode(t: &TileRecord) -> Result<TileAccumulators, FrameError> {
    if ContentHash::of(&t.data).0 != t.hash {
        return Err(FrameError::Decode { index: t.index, detail: "hash mismatch".into() });
    }
    postcard::from_bytes(&t.data).map_err(|e| FrameError::Decode { index: t.index, detail: e.to_string() })
}

/// Assembles a frame from its stored tiles, writes the job's formats (PNG,
/// EXR) and a thumbnail as blobs, exports the files under `frames_dir`,
/// makes and signs its manifest (stored as a blob, its hash in the store's
/// metadata under [`manifest::meta_key`], exported beside the files), and
/// records the frame.
fn write_frame(
    store: &Mutex<Store>,
    frames_dir: &Path,
    job: u64,
    slot: usize,
    spec: &JobSpec,
    signer: Result<&ManifestSigner, &str>,
) -> Result<(), FrameError> {
    let (plan, frame, tiles, mut buffer) = frame_inputs(store, job, slot, spec)?;
    let mut seen = 0;
    let mut manifest_tiles = Vec::with_capacity(tiles.len());
    for t in &tiles {
        let acc = decode(t)?;
        buffer.add_tile(&acc)?;
        // The frame's pixels there with the samples so far: the tile's own
        // in a plain job; in a progressive one, its pass and those before
        // (tiles come by index, so a rectangle's passes come in order).
        // The last pass's are the frame file's pixels.
        let pixels = buffer.region(acc.rect);
        manifest_tiles.push(super::manifest::TileInput {
            index: t.index,
            rect: acc.rect,
            data: &t.data,
            hash: t.hash,
            proof: t.proof.as_deref(),
            pixels_blake3: manifest::pixels_blake3(&pixels),
        });
        seen += 1;
    }
    if seen < plan.tiles_per_frame() {
        let have: std::collections::BTreeSet<u32> = tiles.iter().map(|t| t.index).collect();
        let index = plan.frame_tiles(slot).find(|i| !have.contains(i)).unwrap_or(0);
        return Err(FrameError::Missing { index });
    }

    let dir = job_dir(frames_dir, job);
    std::fs::create_dir_all(&dir).map_err(|source| FrameError::Io { path: dir.clone(), source })?;
    let read = |p: &Path| std::fs::read(p).map_err(|source| FrameError::Io { path: p.to_path_buf(), source });
    // Blob files need no lock: the writer keeps committing meanwhile.
    let blobs = lock(store).blobs().clone();
    // The raw frame (what the proofs cover, with the denoiser's guides in
    // its EXR), then the denoised one: deterministic, so the same tiles give
    // the same denoised bytes, and `tessera verify` re-derives them.
    let denoised = if spec.denoise { Some(buffer.denoised()?) } else { None };
    let mut hashes = std::collections::BTreeMap::new();
    let mut files = std::collections::BTreeMap::new();
    for (image, prefix) in [(Some(&buffer), ""), (denoised.as_ref(), DENOISED)] {
        let Some(image) = image else { continue };
        for &format in &spec.formats {
            let key = format!("{prefix}{}", format.ext());
            let name = frame_file(spec, frame, &key);
            let path = dir.join(&name);
            match format {
                Format::Png => image.write_png_with(&path, &spec.output_options())?,
                Format::Exr => image.write_exr(&path)?,
            }
            let bytes = read(&path)?;
            let hash = blobs.put(&bytes)?;
            files.insert(
                key.clone(),
                ManifestFile { name, blake3: tessera_protocol::hex(&hash), bytes: bytes.len() as u64 },
            );
            hashes.insert(key, hash);
        }
    }
    let hash = |key: &str| hashes.get(key).copied();
    let (exr, png, denoised_exr, denoised_png) =
        (hash("exr"), hash("png"), hash(&format!("{DENOISED}exr")), hash(&format!("{DENOISED}png")));
    // The thumbnail shows what the artist will use: the denoised frame.
    let thumbnail = blobs.put(&thumbnail_png(denoised.as_ref().unwrap_or(&buffer), spec))?;
    // The manifest before the frame's record: a listed frame always has one.
    let signer = signer.map_err(|e| FrameError::Manifest(e.to_string()))?;
    let stem = frame_stem(spec);
    let samples = tessera_protocol::SampleRange { start: 0, count: spec.spp };
    let m = signer.build(job, spec, frame, &stem, files, &manifest_tiles, samples);
    let bytes = m.to_file_bytes();
    let hash = blobs.put(&bytes)?;
    let path = dir.join(manifest::file_name(&stem, frame));
    tessera_frame::write_atomically(&path, |out| {
        std::io::Write::write_all(out, &bytes)
            .map_err(|source| tessera_frame::WriteError::Io { path: path.display().to_string(), source })
    })?;
    lock(store).set_meta(&manifest::meta_key(job, frame), &hash)?;
    let record = FrameRecord { job, frame, exr, png, thumbnail, finished_ms: unix_ms(), denoised_exr, denoised_png };
    lock(store).record_frame(&record)?;
    tracing::info!(job, frame, dir = %dir.display(), "frame written");
    Ok(())
}

/// The metadata key of a progressive frame's latest preview: 4 bytes of
/// pass, 4 of samples (little-endian), then the PNG. In the metadata, not
/// a blob: it is replaced pass after pass and shared with nothing.
pub fn preview_key(job: u64, frame: i32) -> String {
    format!("preview/{job}/{frame}")
}

/// The metadata key prefix of a job's previews.
pub fn preview_prefix(job: u64) -> String {
    format!("preview/{job}/")
}

/// Longest side of a preview, in pixels (the page scales it to its canvas).
const PREVIEW: u32 = 1024;

/// Assembles passes `0..=through` of a progressive frame and stores the
/// picture (denoised if the job is) under [`preview_key`].
fn write_preview(
    store: &Mutex<Store>,
    job: u64,
    slot: usize,
    through: usize,
    spec: &JobSpec,
) -> Result<(), FrameError> {
    let (plan, frame, tiles, mut buffer) = frame_inputs(store, job, slot, spec)?;
    let mut seen = 0;
    for t in tiles.iter().filter(|t| plan.place(t.index).is_some_and(|p| p.pass <= through)) {
        buffer.add_tile(&decode(t)?)?;
        seen += 1;
    }
    if seen < plan.tiles_per_pass() * (through as u32 + 1) {
        let index = (0..=through).flat_map(|p| plan.pass_tiles(p, slot)).next().unwrap_or(0);
        return Err(FrameError::Missing { index });
    }
    let image = if spec.denoise { buffer.denoised()? } else { buffer };
    let mut value = Vec::new();
    value.extend_from_slice(&(through as u32).to_le_bytes());
    value.extend_from_slice(&plan.samples_through(through).to_le_bytes());
    value.extend_from_slice(&scaled_png(&image, spec, PREVIEW));
    lock(store).set_meta(&preview_key(job, frame), &value)?;
    Ok(())
}

/// Longest side of a thumbnail, in pixels.
const THUMBNAIL: u32 = 256;

fn thumbnail_png(buffer: &FrameBuffer, spec: &JobSpec) -> Vec<u8> {
    scaled_png(buffer, spec, THUMBNAIL)
}

/// The frame through the job's view, no larger than `longest` on a side.
fn scaled_png(buffer: &FrameBuffer, spec: &JobSpec, longest: u32) -> Vec<u8> {
    use image::ImageEncoder;
    let pixels = buffer.to_display8(&spec.output_options());
    let Some(img) = image::RgbImage::from_raw(buffer.width, buffer.height, pixels) else { return Vec::new() };
    let scale = f64::from(longest) / f64::from(buffer.width.max(buffer.height));
    let (w, h) = if scale < 1.0 {
        (((f64::from(buffer.width) * scale) as u32).max(1), ((f64::from(buffer.height) * scale) as u32).max(1))
    } else {
        (buffer.width, buffer.height)
    };
    let small = image::imageops::thumbnail(&img, w, h);
    let mut out = Vec::new();
    let _ = image::codecs::png::PngEncoder::new(&mut out).write_image(&small, w, h, image::ExtendedColorType::Rgb8);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Arc<JobSpec> {
        let zeros = "0".repeat(64);
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "name": "t", "module": zeros, "scene": zeros, "width": 8, "height": 8, "fps": 24.0, "extra": "{}",
                "spp": 16, "seed": 0, "tile_size": 8, "frames": [1, 2], "priority": 0, "view": "agx",
                "exposure": 0.0, "fuel_per_tile": 1, "fuel_per_pixel_sample": 1, "progressive": true
            }))
            .unwrap(),
        )
    }

    fn describe(w: &Assemble) -> (char, usize, usize) {
        match w {
            Assemble::Frame { slot, .. } => ('F', *slot, 0),
            Assemble::Preview { slot, through, .. } => ('P', *slot, *through),
        }
    }

    #[test]
    fn frames_go_first_and_stale_previews_are_dropped() {
        let (tx, rx) = mpsc::channel();
        let preview = |slot, through| Assemble::Preview { job: 1, slot, through, spec: spec() };
        for w in [preview(0, 0), preview(1, 0), preview(0, 1), Assemble::Frame { job: 1, slot: 1, spec: spec() }] {
            tx.send(w).unwrap();
        }
        let mut q = AssemblyQueue::default();
        // The frame first; frame 0's first preview is superseded by its
        // second; frame 1's preview is stale once the frame is written.
        assert_eq!(q.next(&rx).map(|w| describe(&w)), Some(('F', 1, 0)));
        assert_eq!(q.next(&rx).map(|w| describe(&w)), Some(('P', 0, 1)));
        drop(tx);
        assert!(q.next(&rx).is_none());
    }
}
