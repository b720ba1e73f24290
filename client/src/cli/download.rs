//! `tessera download`: a job's finished frames and their manifests, each
//! file checked against the listed blake3, named as `tessera render` names
//! them.

use super::*;

#[derive(clap::Args)]
pub struct DownloadArgs {
    job: u64,
    /// Directory for the frames, named `<stem>-NNNN.<ext>` as `tessera render` names them,
    /// each with its signed manifest `<stem>-NNNN.manifest.json` (see `tessera verify`).
    dir: PathBuf,
    /// Formats to fetch, comma-separated [default: all the job has].
    #[arg(long, value_enum, value_delimiter = ',')]
    format: Vec<Format>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `tessera download`.
pub fn download(args: DownloadArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    let formats: Vec<&str> = args.format.iter().map(|f| format_name(*f)).collect();
    download_frames(&client, args.job, &args.dir, &formats, true)
}

/// `<stem>-NNNN.<ext>`, as `tessera render` names frames.
pub fn frame_file_name(stem: &str, frame: i32, ext: &str) -> String {
    format!("{stem}-{frame:04}.{ext}")
}

/// Refuses a stem or extension from the server that would make a file name
/// reach outside the download directory or not be one plain name: empty,
/// path separators, control characters, or nothing but dots (`..`). A `..`
/// inside a name (`v1..2`) stays, as the farm allows it: without a
/// separator it cannot climb out.
pub(super) fn check_name_part(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.contains(['/', '\\', ':']) || s.chars().all(|c| c == '.') || s.chars().any(char::is_control) {
        bail!("the coordinator names the frames' {what} {s:?}, which is not a plain file name part; refusing it");
    }
    Ok(())
}

/// One file to fetch.
struct Planned<'a> {
    path: PathBuf,
    info: &'a FileInfo,
    hash: blake3::Hash,
}

/// Downloads the finished frames of job `id` into `dir` (`formats`: all the
/// job has if empty) with each frame's manifest (`<stem>-NNNN.manifest.json`),
/// skipping files already there with the listed blake3 and verifying each
/// downloaded one.
pub(super) fn download_frames(
    client: &Client,
    id: u64,
    dir: &Path,
    formats: &[&str],
    summary_to_stdout: bool,
) -> Result<()> {
    let job: Job = client.get_json(&job_path(id))?;
    for f in formats {
        if !job.settings.formats.iter().any(|j| j == f) {
            bail!("job {id} has no {f} files (its formats: {})", clean(&job.settings.formats.join(", ")));
        }
    }
    let list: FrameList = client.get_json(&format!("{}/frames", job_path(id)))?;
    check_name_part("stem", &list.stem)?;
    let mut plan = Vec::new();
    for frame in &list.frames {
        for (ext, info) in &frame.files {
            // `--format png` also fetches a denoised job's `denoised.png`.
            let format = ext.strip_prefix(manifest::DENOISED).unwrap_or(ext);
            if !formats.is_empty() && !formats.contains(&format) {
                continue;
            }
            check_name_part("extension", ext)?;
            let hash = blake3::Hash::from_hex(&info.blake3).map_err(|e| {
                anyhow::anyhow!(
                    "frame {} {ext}: the listed blake3 {:?} is not one: {e}",
                    frame.frame,
                    clean(&info.blake3)
                )
            })?;
            plan.push(Planned { path: dir.join(frame_file_name(&list.stem, frame.frame, ext)), info, hash });
        }
        // The frame's signed manifest, beside it, whatever formats were
        // asked for: `tessera verify` checks the frame with it offline.
        if let Some(info) = &frame.manifest {
            let hash = blake3::Hash::from_hex(&info.blake3).map_err(|e| {
                anyhow::anyhow!(
                    "frame {} manifest: the listed blake3 {:?} is not one: {e}",
                    frame.frame,
                    clean(&info.blake3)
                )
            })?;
            plan.push(Planned { path: dir.join(manifest::file_name(&list.stem, frame.frame)), info, hash });
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut fetch = Vec::new();
    let mut present = 0usize;
    for p in plan {
        if p.path.is_file() && file_hash(&p.path).is_ok_and(|h| h == p.hash) {
            present += 1;
        } else {
            fetch.push(p);
        }
    }
    let total: u64 = fetch.iter().map(|p| p.info.bytes).sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut bytes = 0u64;
    for (k, p) in fetch.iter().enumerate() {
        let name = p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        bar.set_message(format!("{name} ({}/{})", k + 1, fetch.len()));
        let got = client.download(&p.info.url, &p.path, Some((p.info.bytes, p.hash)), &mut |n| bar.inc(n));
        match got {
            Ok((n, _)) => bytes += n,
            Err(e) => {
                bar.abandon();
                return Err(e.into());
            }
        }
    }
    bar.finish_and_clear();
    let shown = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let summary = format!(
        "downloaded {} file{} ({}) of job {id} to {}{}",
        fetch.len(),
        if fetch.len() == 1 { "" } else { "s" },
        human_bytes(bytes),
        shown.display(),
        if present > 0 { format!("; {present} already there") } else { String::new() },
    );
    if summary_to_stdout {
        println!("{summary}");
    } else {
        eprintln!("tessera: {summary}");
    }
    if job.state != "done" {
        eprintln!(
            "tessera: job {id} is {}: {} of {} frames finished; run this again later for the rest",
            clean(&job.state),
            list.frames.len(),
            job.settings.frames.len()
        );
    }
    Ok(())
}

fn file_hash(path: &Path) -> std::io::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize())
}
