//! A studio's own tool on `tessera-client` alone (no coordinator, SQLite or
//! sandbox in its dependencies): submit a scene, wait for the job, download
//! its first frame's PNG with the signed manifest, and verify them offline.
//!
//! ```text
//! TESSERA_URL=http://farm:7878 TESSERA_TOKEN=ta_… \
//!   cargo run -p tessera-client --example studio_tool -- scene.glb out/
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use tessera_client::conn::ConnArgs;
use tessera_client::http::Client;
use tessera_client::model::{FrameList, FrameSelection, Job, SubmitSettings};
use tessera_client::pack::pack_scene;
use tessera_client::verify::{verify, Report, VerifyOptions};

pub type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(scene), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: studio_tool SCENE OUT_DIR (farm from TESSERA_URL / TESSERA_TOKEN)".into());
    };
    let client = Client::new(&ConnArgs::default().resolve()?);
    let job = submit_and_wait(&client, &scene)?;
    let frame = download_first_frame(&client, job.id, &out)?;
    println!("job {} done; {} verified", job.id, frame.display());
    Ok(())
}

/// Submits `scene` (a .gltf is packed with its files) as a preview: frame
/// 1, 160 pixels wide, 16 samples; and polls it until it is finished.
pub fn submit_and_wait(client: &Client, scene: &Path) -> Result<Job, Error> {
    let bytes = pack_scene(scene)?;
    let name = scene.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "scene".into());
    let settings = SubmitSettings {
        frames: Some(FrameSelection::List(vec![1])),
        width: Some(160),
        spp: Some(16),
        formats: Some(vec!["png".into()]),
        ..Default::default()
    };
    let mut job = client.submit(&bytes, &name, &settings)?;
    while !matches!(job.state.as_str(), "done" | "failed" | "cancelled") {
        std::thread::sleep(Duration::from_millis(300));
        job = client.get_json(&format!("/api/v1/jobs/{}", job.id))?;
    }
    match job.state.as_str() {
        "done" => Ok(job),
        state => Err(format!("job {} {state}: {}", job.id, job.error.unwrap_or_default()).into()),
    }
}

/// Downloads the job's first frame (PNG) and its manifest into `dir`,
/// checked against the listed blake3, then verifies them offline; returns
/// the manifest's path.
pub fn download_first_frame(client: &Client, job: u64, dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir)?;
    let list: FrameList = client.get_json(&format!("/api/v1/jobs/{job}/frames"))?;
    let frame = list.frames.first().ok_or("the job has no frames")?;
    let png = frame.files.get("png").ok_or("the frame has no PNG")?;
    let manifest = frame.manifest.as_ref().ok_or("the frame has no manifest")?;
    let stem = format!("{}-{:04}", list.stem, frame.frame);
    for (info, name) in [(png, format!("{stem}.png")), (manifest, format!("{stem}.manifest.json"))] {
        let hash = blake3::Hash::from_hex(&info.blake3)?;
        client.download(&info.url, &dir.join(name), Some((info.bytes, hash)), &mut |_| {})?;
    }
    let path = dir.join(format!("{stem}.manifest.json"));
    let mut report = Report::new(|check| println!("{check}"));
    verify(&VerifyOptions::new(&path), &mut report)?;
    match report.failed() {
        0 => Ok(path),
        n => Err(format!("{n} checks of {} failed", path.display()).into()),
    }
}
