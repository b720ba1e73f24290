//! The `tessera` binary's client commands (the `cli` feature): `submit`,
//! `status`, `logs`, `download`, `cancel`, `retry`, `delete`, `workers`
//! and `verify`, with their flags (clap) and progress bars (indicatif).
//! They use only the HTTP API (docs/api.md), so they drive any farm;
//! [`crate::conn`] says where it is. Binary code: errors are `anyhow`.
//!
//! `submit` takes `tessera render`'s flags with their meanings and value
//! parsing, but sends only what was given, so the farm's defaults (equal to
//! render's) apply to the rest; frames land under the names render gives
//! them (`<stem>-NNNN.<ext>`).

mod download;
mod jobs;
mod submit;
pub mod verify;

pub use download::{download, frame_file_name, DownloadArgs};
pub use jobs::{cancel, delete, logs, retry, status, workers, JobArgs, LogsArgs, StatusArgs, WorkersArgs};
pub use submit::{submit, SubmitArgs};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tessera_frame::ViewTransform;

use crate::conn::ConnArgs;
use crate::frames::{format_frames, parse_frames};
use crate::http::{Client, ClientError};
use crate::model::{FileInfo, FrameList, FrameSelection, Job, JobList, LogPage, SubmitSettings, WorkerList};
use crate::pack::pack_scene;
use crate::{clean, manifest};
/// An output file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// 8-bit sRGB after the view transform and exposure.
    Png,
    /// Linear 32-bit float, no view transform.
    Exr,
}

/// The bytes of a job module: `--module`, else the one built into the binary.
pub fn module_bytes(path: Option<&PathBuf>, embedded: Option<&'static [u8]>, name: &str) -> Result<Vec<u8>> {
    match (path, embedded) {
        (Some(p), _) => std::fs::read(p).with_context(|| {
            format!("reading the job module {} (build it with `cargo xtask build-guests`)", p.display())
        }),
        (None, Some(bytes)) => Ok(bytes.to_vec()),
        (None, None) => bail!(
            "this tessera binary was built without the {name} job embedded (no wasm toolchain at build time): \
             pass --module PATH (build it with `cargo xtask build-guests {name}`)"
        ),
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Png => "png",
        Format::Exr => "exr",
    }
}

fn job_path(id: u64) -> String {
    format!("/api/v1/jobs/{id}")
}

fn is_finished(state: &str) -> bool {
    matches!(state, "done" | "failed" | "cancelled")
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn human_secs(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        0..=9_999 => format!("{b} B"),
        10_000..=9_999_999 => format!("{:.1} KB", b as f64 / 1e3),
        _ => format!("{:.1} MB", b as f64 / 1e6),
    }
}

/// Columns padded to their widest cell; `right[i]` right-aligns column i.
fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
            if i > 0 {
                s.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                s.push_str(&pad);
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&pad);
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// As [`clean`], keeping newlines and tabs (log messages).
fn clean_text(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '?' } else { c }).collect()
}

/// `YYYY-MM-DD HH:MM:SSZ` of Unix milliseconds, in UTC.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z", t / 3600, t / 60 % 60, t % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::download::check_name_part;
    use super::jobs::percent;
    use super::submit::submit_settings;
    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        submit: SubmitArgs,
    }

    fn parse(args: &[&str]) -> Result<SubmitSettings> {
        let cli = Cli::try_parse_from(std::iter::once("submit").chain(args.iter().copied()))?;
        submit_settings(&cli.submit)
    }

    #[test]
    fn frame_files_are_named_as_render_names_them() {
        assert_eq!(frame_file_name("turntable", 1, "png"), "turntable-0001.png");
        assert_eq!(frame_file_name("shot", 12345, "exr"), "shot-12345.exr");
        assert_eq!(frame_file_name("shot", -5, "png"), "shot--005.png");
        assert_eq!(frame_file_name("shot", -5, "png"), format!("{}-{:04}.{}", "shot", -5, "png"));
    }

    #[test]
    fn stems_that_leave_the_directory_are_refused() {
        for bad in ["", "../x", "..", ".", "...", "a/b", "a\\b", "c:x", "a\nb", "/abs", "\0"] {
            assert!(check_name_part("stem", bad).is_err(), "{bad:?}");
        }
        for good in ["turntable", "shot 010", "café", ".hidden", "a.b", "v1..2"] {
            assert!(check_name_part("stem", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn submit_sends_only_what_was_given() {
        // Nothing given: nothing sent (not even render's defaults), so the farm's apply.
        let s = parse(&["scene.glb"]).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "{}");
        let s = parse(&[
            "scene.glb",
            "--frames",
            "1-3,7",
            "--spp",
            "4",
            "--width",
            "64",
            "--format",
            "png,exr",
            "--view",
            "Filmic",
            "--exposure",
            "-1.5",
            "--background",
            "0.1,0.2,0.3",
            "--background-strength",
            "2",
            "--tile-size",
            "32",
            "--priority",
            "-2",
            "--name",
            "shot",
        ])
        .unwrap();
        assert_eq!(s.frames, Some(FrameSelection::Text("1-3,7".into())));
        assert_eq!((s.spp, s.width, s.height, s.tile_size), (Some(4), Some(64), None, Some(32)));
        assert_eq!(s.formats, Some(vec!["png".into(), "exr".into()]));
        assert_eq!(s.view_transform.as_deref(), Some("filmic"));
        assert_eq!((s.exposure, s.background, s.background_strength), (Some(-1.5), Some([0.1, 0.2, 0.3]), Some(2.0)));
        assert_eq!((s.priority, s.name.as_deref(), s.bounces, s.seed), (Some(-2), Some("shot"), None, None));
    }

    #[test]
    fn submit_refuses_typos_before_uploading() {
        let err = parse(&["scene.glb", "--frames", "1-x"]).unwrap_err().to_string();
        assert!(err.contains("--frames"), "{err}");
        assert!(parse(&["scene.glb", "--spp", "0"]).unwrap_err().to_string().contains("--spp"));
        assert!(parse(&["scene.glb", "--format", "jpg"]).is_err());
        assert!(parse(&["scene.glb", "--view", "aces"]).is_err());
        assert!(parse(&["scene.glb", "--background", "0.1,0.2"]).unwrap_err().to_string().contains("R,G,B"));
        assert!(parse(&["scene.glb", "--background", "0.1,0.2,0.3,0.4"]).is_err());
        assert!(parse(&["scene.glb", "--background", "red"]).is_err());
    }

    #[test]
    fn tables_align_and_server_text_is_cleaned() {
        let rows =
            vec![vec!["7".into(), "running".into(), clean("a\x1b[2Jb")], vec!["12".into(), "done".into(), "x".into()]];
        let t = table(&["ID", "STATE", "NAME"], &rows, &[true, false, false]);
        assert_eq!(t, "ID  STATE    NAME\n 7  running  a?[2Jb\n12  done     x\n");
        assert_eq!(clean_text("a\nb\tc\x07"), "a\nb\tc?");
        assert_eq!(percent(0.333), "33%");
        assert_eq!(percent(f64::NAN), "0%");
        assert_eq!(percent(1.5), "100%");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_764_480_000_000), "2025-11-30 05:20:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(human_secs(42.4), "42 s");
        assert_eq!(human_secs(125.0), "2m05s");
        assert_eq!(human_secs(7300.0), "2h01m");
    }
}
