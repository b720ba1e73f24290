//! The Blender add-on (blender/), headless in Debian's Blender against a
//! real farm (`tessera demo`): the zip `cargo xtask blender-addon` builds is
//! installed as a user would, a scene built by the test is submitted, the
//! failures an artist can meet come back as clear errors, and the frames
//! land in the scene's Output path, byte-identical to the API's, both
//! headless (inline) and through the threaded path the UI uses.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::client_cli::{root, start_demo};

fn build_zips(out: &Path) -> Vec<u8> {
    let status = Command::new("python3")
        .arg(root().join("blender/build_addon.py"))
        .arg("--out")
        .arg(out)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "building the add-on zip failed");
    let mut zips: Vec<_> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).collect();
    zips.sort();
    assert_eq!(zips.len(), 2, "{zips:?}");
    std::fs::read(zips.iter().find(|p| !p.to_string_lossy().contains("extension")).unwrap()).unwrap()
}

#[test]
fn the_blender_add_on_submits_and_saves_frames_to_the_output_path() {
    let demo = start_demo();
    let dir = tempfile::tempdir().unwrap();
    // The same sources give the same zip bytes.
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let zip = build_zips(&a);
    assert!(zip == build_zips(&b), "the add-on zip is not reproducible");
    let zip_path = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.to_string_lossy().contains("extension"))
        .unwrap();
    let out = dir.path().join("renders");
    std::fs::create_dir(&out).unwrap();

    let output = Command::new("blender")
        .args(["-b", "--factory-startup", "--python-exit-code", "1", "--python"])
        .arg(root().join("blender/tests/submit_test.py"))
        .arg("--")
        .arg("--zip")
        .arg(&zip_path)
        .args(["--url", &demo.url, "--token", &demo.token, "--out"])
        .arg(&out)
        // Install into a scratch profile, not the user's.
        .env("BLENDER_USER_SCRIPTS", dir.path().join("scripts"))
        .env("BLENDER_USER_CONFIG", dir.path().join("config"))
        .output()
        .expect("Debian's blender is installed (cargo xtask test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the add-on test failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}"));

    // Each failure named its cause.
    let errors = &result["errors"];
    assert!(errors["unreachable"].as_str().unwrap().contains("Cannot reach the farm"), "{errors}");
    assert!(errors["token"].as_str().unwrap().contains("refused the API token"), "{errors}");
    assert!(errors["refused"].as_str().unwrap().contains("spp must be"), "{errors}");
    assert!(errors["camera"].as_str().unwrap().contains("no camera"), "{errors}");

    // The job rendered what Blender's scene says, and the files on disk are the farm's.
    let job_id = result["job"].as_u64().unwrap();
    let job: Value = ureq::get(format!("{}/api/v1/jobs/{job_id}", demo.url))
        .header("Authorization", &format!("Bearer {}", demo.token))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let s = &job["settings"];
    assert_eq!(s["frames"], serde_json::json!([1, 2, 3]), "{job}");
    assert_eq!((s["width"].as_u64(), s["height"].as_u64(), s["spp"].as_u64()), (Some(64), Some(36), Some(4)));
    assert_eq!(s["camera"], "Shot camera");
    assert_eq!(s["denoise"], true, "the panel denoises by default: {job}");
    assert_eq!(job["state"], "done");
    for frame in 1..=3 {
        for ext in ["png", "exr", "denoised.png", "denoised.exr"] {
            let name = format!("shot_{frame:04}.{ext}");
            let local = std::fs::read(out.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let farm = ureq::get(format!("{}/api/v1/jobs/{job_id}/frames/{frame}.{ext}", demo.url))
                .header("Authorization", &format!("Bearer {}", demo.token))
                .call()
                .unwrap()
                .body_mut()
                .with_config()
                .limit(1 << 30)
                .read_to_vec()
                .unwrap();
            assert!(local == farm, "{name} differs from the farm's file");
        }
    }
    // The interactive path (a thread, followed by the panel's timer) saved its frames too.
    assert_eq!(result["threaded_job"].as_u64(), Some(job_id + 1), "{result}");
    for frame in 1..=3 {
        assert!(out.join(format!("live/take_{frame:04}.png")).is_file());
    }
    // The animation reached the farm: the cube moved between frames 1 and 3.
    assert_ne!(std::fs::read(out.join("shot_0001.png")).unwrap(), std::fs::read(out.join("shot_0003.png")).unwrap());
}
