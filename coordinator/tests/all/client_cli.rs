//! The client commands (`submit`, `status`, `download`...) and
//! examples/submit.py against a real farm (`tessera demo`), through the HTTP
//! API only: the farm's frames must be byte-identical to `tessera render`'s.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[allow(dead_code)] // its `main`: the test calls the example's functions
#[path = "../../../client/examples/studio_tool.rs"]
mod studio_tool;

fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scene() -> PathBuf {
    root().join("samples/scenes/turntable.glb")
}

/// A `tessera demo` serving until dropped.
pub struct Demo {
    child: Child,
    pub url: String,
    pub token: String,
    /// The sign-in link it printed (the token in the fragment).
    pub sign_in: String,
    _data: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a child's pipe on a thread, line by line, into a channel; `echo`
/// copies each line to this process's stderr. It keeps reading after the
/// test stops listening: a closed pipe would make the demo's next line a
/// broken-pipe panic that kills it.
fn lines_of(pipe: impl std::io::Read + Send + 'static, echo: bool) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if echo {
                eprintln!("{line}");
            }
            let _ = tx.send(line);
        }
    });
    rx
}

/// Starts `tessera demo` (ports 0: never collides with a demo someone is
/// running) and waits until its sample job is rendered. Checks what a
/// newcomer sees: the web address, token and sign-in link come before the
/// rendering does, and a clean start logs no warning or error.
pub fn start_demo() -> Demo {
    let data = tempfile::tempdir().unwrap();
    let mut child = tessera()
        .args(["demo", "--workers", "2", "--frames", "1", "--width", "48", "--spp", "2"])
        .args(["--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--data"])
        .arg(data.path().join("farm"))
        .current_dir(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines_of(child.stdout.take().unwrap(), false);
    let stderr = lines_of(child.stderr.take().unwrap(), true);
    let mut demo = Demo { child, url: String::new(), token: String::new(), sign_in: String::new(), _data: data };
    let mut seen = String::new();
    loop {
        let line = stdout
            .recv_timeout(Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("the demo did not finish its sample job ({e}); it said:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if let Some(v) = line.strip_prefix("web:") {
            demo.url = v.trim().to_owned();
        }
        if let Some(v) = line.strip_prefix("token:") {
            demo.token = v.trim().to_owned();
        }
        if let Some(v) = line.strip_prefix("sign in:") {
            demo.sign_in = v.trim().to_owned();
        }
        if line.starts_with("rendered ") {
            break;
        }
    }
    assert!(
        !demo.url.is_empty() && !demo.token.is_empty(),
        "the demo printed no web:/token: lines before rendering; it said:\n{seen}"
    );
    assert_eq!(demo.sign_in, format!("{}/#token={}", demo.url, demo.token), "{seen}");
    // What it logged meanwhile (the last lines may trail stdout's a little).
    std::thread::sleep(Duration::from_millis(300));
    let logged: Vec<String> = stderr.try_iter().collect();
    let bad: Vec<&String> = logged.iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    assert!(bad.is_empty(), "a clean demo start logged warnings or errors:\n{}", logged.join("\n"));
    demo
}

fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

const SIZE: [&str; 8] = ["--frames", "1-2", "--width", "64", "--height", "36", "--spp", "4"];

#[test]
fn submit_download_status_and_python_match_a_local_render() {
    let demo = start_demo();
    let dir = tempfile::tempdir().unwrap();
    let (farm, local, py) = (dir.path().join("farm"), dir.path().join("local"), dir.path().join("py"));

    // (a) Submit, wait and download through the API ...
    let out = tessera()
        .arg("submit")
        .arg(scene())
        .args(SIZE)
        .args(["--format", "png,exr", "--tile-size", "64", "--download"])
        .arg(&farm)
        .args(["--url", &demo.url, "--token", &demo.token])
        .output()
        .unwrap();
    let stdout = ok(out, "tessera submit");
    let job: u64 = stdout.lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("{stdout}"));

    // ... and render the same on this machine: the same files, byte for byte.
    let out = tessera()
        .arg("render")
        .arg(scene())
        .args(SIZE)
        .args(["--format", "png,exr", "--tile-size", "64", "--out"])
        .arg(&local)
        .output()
        .unwrap();
    ok(out, "tessera render");
    for f in [1, 2] {
        for ext in ["png", "exr"] {
            let name = format!("turntable-{f:04}.{ext}");
            let a = std::fs::read(farm.join(&name)).unwrap_or_else(|e| panic!("farm {name}: {e}"));
            let b = std::fs::read(local.join(&name)).unwrap_or_else(|e| panic!("local {name}: {e}"));
            assert!(a == b, "{name} differs between the farm and tessera render");
        }
    }
    let mut names: Vec<_> = std::fs::read_dir(&farm).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names.len(), 6, "only the frames and their manifests, no temporary files: {names:?}");

    // Each frame came with its signed manifest, and verifies offline
    // (re-rendering two pixels through the path tracer built into tessera).
    for f in [1, 2] {
        let out = tessera()
            .arg("verify")
            .arg(farm.join(format!("turntable-{f:04}.manifest.json")))
            .args(["--recheck", "2", "--scene"])
            .arg(scene())
            .output()
            .unwrap();
        let stdout = ok(out, "tessera verify");
        assert!(stdout.contains("✓ verified") && stdout.contains("2 pixels re-rendered"), "{stdout}");
    }

    // Downloading again fetches nothing: the files are there with the right blake3.
    let out = tessera()
        .args(["download", &job.to_string()])
        .arg(&farm)
        .args(["--format", "png", "--url", &demo.url, "--token", &demo.token])
        .output()
        .unwrap();
    let stdout = ok(out, "tessera download");
    // (The manifests come whatever formats are asked for.)
    assert!(stdout.contains("downloaded 0 files") && stdout.contains("4 already there"), "{stdout}");

    // (b) The job is done, as JSON.
    let out = tessera()
        .args(["status", &job.to_string(), "--json", "--url", &demo.url, "--token", &demo.token])
        .output()
        .unwrap();
    let stdout = ok(out, "tessera status");
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(value["id"], job);
    assert_eq!(value["state"], "done", "{stdout}");
    // The table and the log read too.
    let out = tessera().args(["status", "--url", &demo.url, "--token", &demo.token]).output().unwrap();
    let stdout = ok(out, "tessera status (table)");
    assert!(stdout.contains("turntable.glb") && stdout.contains("done"), "{stdout}");
    let out = tessera().args(["logs", &job.to_string(), "--url", &demo.url, "--token", &demo.token]).output().unwrap();
    ok(out, "tessera logs");
    let out = tessera().args(["workers", "--url", &demo.url, "--token", &demo.token]).output().unwrap();
    let stdout = ok(out, "tessera workers");
    assert!(stdout.contains("local-0") && stdout.contains("local-1"), "{stdout}");

    // (c) The Python example gets the same PNG bytes.
    if Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = Command::new("python3")
            .arg(root().join("examples/submit.py"))
            .args(["--url", &demo.url, "--token", &demo.token])
            .arg(scene())
            .args(SIZE)
            .arg("--out")
            .arg(&py)
            .output()
            .unwrap();
        ok(out, "examples/submit.py");
        for f in [1, 2] {
            let name = format!("turntable-{f:04}.png");
            let a = std::fs::read(py.join(&name)).unwrap_or_else(|e| panic!("python {name}: {e}"));
            assert!(a == std::fs::read(local.join(&name)).unwrap(), "{name} differs between submit.py and render");
        }
    } else {
        eprintln!("python3 not found: examples/submit.py not tested");
    }

    // (d) A studio's own tool on the client library (client/examples/
    // studio_tool.rs, compiled in here): submit, wait, download the frame
    // with its manifest and verify it, through the library only. Its frame
    // is the local render of the same settings, byte for byte.
    let conn = tessera_client::conn::Conn { url: demo.url.clone(), token: demo.token.clone() };
    let client = tessera_client::http::Client::new(&conn);
    let job = studio_tool::submit_and_wait(&client, &scene()).unwrap_or_else(|e| panic!("studio tool: {e}"));
    let lib = dir.path().join("lib");
    let manifest = studio_tool::download_first_frame(&client, job.id, &lib).unwrap_or_else(|e| panic!("{e}"));
    assert!(manifest.is_file());
    let out = tessera()
        .arg("render")
        .arg(scene())
        .args(["--frames", "1", "--width", "160", "--spp", "16", "--format", "png", "--out"])
        .arg(dir.path().join("local16"))
        .output()
        .unwrap();
    ok(out, "tessera render (16 spp)");
    let a = std::fs::read(lib.join("turntable-0001.png")).unwrap();
    let b = std::fs::read(dir.path().join("local16/turntable-0001.png")).unwrap();
    assert!(a == b, "the library client's frame differs from tessera render's");

    // (e) A bad token: refused with the server's 401, non-zero exit.
    let out = tessera().args(["status", "--url", &demo.url, "--token", "ta_bogus"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
}

#[test]
fn a_missing_token_or_farm_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera()
        .args(["status"])
        .env_remove("TESSERA_TOKEN")
        .env_remove("TESSERA_URL")
        .env_remove("TESSERA_CLIENT_CONFIG")
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--token") && stderr.contains("TESSERA_TOKEN"), "{stderr}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let out = tessera().args(["workers", "--url", &url, "--token", "ta_x"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&url) && stderr.contains("--url"), "{stderr}");

    // A frame-list typo fails before anything is read or sent.
    let out = tessera()
        .args(["submit", "/nonexistent/scene.glb", "--frames", "1-", "--url", &url, "--token", "ta_x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--frames") && !stderr.contains("nonexistent"), "{stderr}");
}
