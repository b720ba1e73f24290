//! The commands that read or change a job or list workers: `status`,
//! `logs`, `cancel`, `retry`, `delete`, `workers`.

use super::*;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// One job's details; default: a table of every job.
    job: Option<u64>,
    /// Print the API's JSON instead.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    job: u64,
    /// Keep printing new lines until the job is finished.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(clap::Args)]
pub struct JobArgs {
    job: u64,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(clap::Args)]
pub struct WorkersArgs {
    /// Print the API's JSON instead.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `tessera status`.
pub fn status(args: StatusArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    if let Some(id) = args.job {
        let job: Job = client.get_json(&job_path(id))?;
        if args.json {
            return print_json(&job);
        }
        print!("{}", job_details(&job));
        return Ok(());
    }
    let list: JobList = client.get_json("/api/v1/jobs")?;
    if args.json {
        return print_json(&list);
    }
    if list.jobs.is_empty() {
        println!("no jobs");
        return Ok(());
    }
    let rows = list
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                clean(&j.state),
                percent(j.progress.fraction),
                format!("{}/{}", j.progress.frames_done, j.progress.frames),
                clean(&j.name),
            ]
        })
        .collect::<Vec<_>>();
    print!("{}", table(&["ID", "STATE", "PROGRESS", "FRAMES", "NAME"], &rows, &[true, false, true, true, false]));
    Ok(())
}

pub(super) fn percent(fraction: f64) -> String {
    let f = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.0 };
    format!("{:.0}%", (f * 100.0).floor())
}

fn job_details(j: &Job) -> String {
    let s = &j.settings;
    let p = &j.progress;
    let mut out = format!("job {}: {}\n", j.id, clean(&j.name));
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<10}{v}\n"));
    let eta = p.eta_s.filter(|s| s.is_finite() && *s >= 0.0).map(|s| format!(", ETA {}", human_secs(s)));
    line(
        "state:",
        format!(
            "{} ({}: {}/{} tiles, {}/{} frames{})",
            clean(&j.state),
            percent(p.fraction),
            p.tiles_done,
            p.tiles,
            p.frames_done,
            p.frames,
            eta.unwrap_or_default()
        ),
    );
    if let Some(e) = &j.error {
        line("error:", clean(e));
    }
    line("created:", utc(j.created_ms));
    if let Some(f) = j.finished_ms {
        line("finished:", utc(f));
    }
    line("frames:", format!("{} at {} fps", format_frames(&s.frames), s.fps));
    line(
        "image:",
        format!(
            "{}x{}, {} spp, {} bounces, {} px tiles, seed {}",
            s.width, s.height, s.spp, s.bounces, s.tile_size, s.seed
        ),
    );
    line(
        "output:",
        format!("{} ({}, exposure {})", clean(&s.formats.join(", ")), clean(&s.view_transform), s.exposure),
    );
    if s.denoise {
        line("denoise:", format!("yes: each frame also as {} (the raw frame is kept)", tessera_frame::DENOISER));
    }
    if s.progressive {
        line("passes:", "progressive: a preview of each frame after each sample pass".to_owned());
    }
    line("camera:", s.camera.as_deref().map_or("the scene's first".to_owned(), clean));
    let bg = s.background.map_or("Blender's grey".to_owned(), |[r, g, b]| format!("{r},{g},{b}"));
    line("world:", format!("{bg}, strength {}", s.background_strength));
    line("priority:", s.priority.to_string());
    out
}

/// `tessera logs`.
pub fn logs(args: LogsArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    let base = format!("{}/log", job_path(args.job));
    let mut after: Option<u64> = None;
    loop {
        // The state is read before the log: once it says finished, the log
        // read after it holds the job's last lines.
        let finished = args.follow && is_finished(&client.get_json::<Job>(&job_path(args.job))?.state);
        let path = match after {
            Some(seq) => format!("{base}?after={seq}"),
            None => base.clone(),
        };
        let page: LogPage = client.get_json(&path)?;
        for e in &page.entries {
            println!("{}  {:<5}  {}", utc(e.time_ms), clean(&e.level), clean_text(&e.message));
            after = Some(after.map_or(e.seq, |a| a.max(e.seq)));
        }
        if !args.follow || finished {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `tessera cancel`.
pub fn cancel(args: JobArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    let job: Job = client.post_json(&format!("{}/cancel", job_path(args.job)), None)?;
    println!("job {}: {}", job.id, clean(&job.state));
    Ok(())
}

/// `tessera retry`.
pub fn retry(args: JobArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    let job: Job = client.post_json(&format!("{}/retry", job_path(args.job)), None)?;
    println!("job {}: {}", job.id, clean(&job.state));
    Ok(())
}

/// `tessera delete`.
pub fn delete(args: JobArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    client.delete(&job_path(args.job))?;
    println!("job {}: deleted", args.job);
    Ok(())
}

/// `tessera workers`.
pub fn workers(args: WorkersArgs) -> Result<()> {
    let client = Client::new(&args.conn.resolve()?);
    let list: WorkerList = client.get_json("/api/v1/workers")?;
    if args.json {
        return print_json(&list);
    }
    if list.workers.is_empty() {
        println!("no workers");
        return Ok(());
    }
    let rows = list
        .workers
        .iter()
        .map(|w| {
            let caps = w.capabilities.as_ref();
            vec![
                clean(&w.name),
                clean(&w.state),
                caps.map_or("-".into(), |c| c.slots.to_string()),
                w.leases.to_string(),
                w.tiles_done.to_string(),
                caps.and_then(|c| c.gpu.as_deref()).map_or("-".into(), clean),
                clean(&w.identity.chars().take(12).collect::<String>()),
            ]
        })
        .collect::<Vec<_>>();
    let header = ["NAME", "STATE", "SLOTS", "LEASES", "TILES", "GPU", "IDENTITY"];
    print!("{}", table(&header, &rows, &[false, false, true, true, true, false, false]));
    Ok(())
}
