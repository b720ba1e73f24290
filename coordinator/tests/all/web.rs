//! The artists' web page, end to end in a real headless Chromium against a
//! real farm (`tessera demo`: coordinator, QUIC workers, SQLite, wasm):
//! sign in, a bad upload's error, upload the sample scene, tiles appearing
//! live, completion, a frame downloaded through the browser equal to the
//! API's bytes, the proof view of a tile, the workers page, a `.gltf` and
//! its `.bin` dropped on the page, cancel and retry, a phone-sized screen,
//! and no console errors. Screenshots go to
//! `target/test-artifacts/web/`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::browser::keys::ENTER;
use crate::browser::{artifacts_dir, Browser};
use crate::client_cli::start_demo;
use crate::turntable_separate;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn api_get(url: &str, token: &str) -> Vec<u8> {
    let mut r = ureq::get(url).header("Authorization", &format!("Bearer {token}")).call().unwrap();
    r.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap()
}

fn api_json(url: &str, token: &str) -> Value {
    serde_json::from_slice(&api_get(url, token)).unwrap()
}

/// Console entries that are errors, but the failed loads this test causes
/// on purpose (a refused token, a refused scene).
fn console_errors(browser: &Browser, expected: &[&str]) -> Vec<String> {
    browser
        .console()
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .map(|(_, message)| message)
        .filter(|m| !expected.iter().any(|e| m.contains("Failed to load resource") && m.contains(e)))
        .collect()
}

#[test]
fn an_artist_uploads_watches_downloads_and_checks_proofs() {
    let demo = start_demo();
    let downloads = tempfile::tempdir().unwrap();
    let shots = artifacts_dir();
    let browser = Browser::start(downloads.path(), 1280, 900).unwrap_or_else(|e| panic!("{e}"));
    let long = Duration::from_secs(180);
    let short = Duration::from_secs(20);

    // Sign in, by keyboard: a wrong token is refused with the server's reason.
    browser.goto(&demo.url);
    let token = browser.wait_for("#token", short);
    token.send_keys(&format!("ta_not_a_token{ENTER}"));
    let error = browser.wait_for("#signin-error .error", short);
    assert!(error.text().contains("not accepted"), "{}", error.text());
    let token = browser.find("#token");
    token.clear();
    token.send_keys(&format!("{}{ENTER}", demo.token));
    browser.wait_for("#jobs tbody tr", short);
    browser.screenshot(&shots.join("jobs.png"));

    // The demo's sign-in link signs in without typing (in an open page too),
    // and the token leaves the address bar.
    browser.find("#signout").click();
    browser.wait_for("#token", short);
    browser.goto(&demo.sign_in);
    browser.wait_for("#jobs tbody tr", short);
    let url = browser.url();
    assert!(url.ends_with("#/jobs") && !url.contains(&demo.token), "{url}");

    // A bad file: the server's error next to the file, no job.
    let bad = downloads.path().join("broken.glb");
    std::fs::write(&bad, b"this is not a scene").unwrap();
    browser.find("a[href='#/submit']").click();
    browser.wait_for("#file", short).send_keys(bad.to_str().unwrap());
    let error = browser.wait_for("#scene-error", short);
    assert!(error.text().contains("broken.glb") && error.text().contains("not glTF"), "{}", error.text());
    browser.screenshot(&shots.join("bad-upload.png"));

    // The sample scene: settings pre-filled from the scene.
    let scene = crate::client_cli::root().join("samples/scenes/turntable.glb");
    browser.find("#file").send_keys(scene.canonicalize().unwrap().to_str().unwrap());
    browser.wait_for("#submit-form", long);
    let value = |id: &str| browser.find(id).attr("value").unwrap_or_default();
    assert_eq!(value("#frames"), "0-48", "the scene's animation range");
    assert_eq!((value("#width"), value("#height")), ("1920".into(), "1080".into()));
    let cameras: Vec<String> = browser.find_all("#camera option").iter().map(|o| o.text()).collect();
    assert_eq!(cameras, ["Camera", "Closeup"]);
    assert!(browser.find("#scene-summary").text().contains("turntable.glb"));
    browser.screenshot(&shots.join("submit.png"));
    for (id, v) in [("#frames", "1-2"), ("#width", "96"), ("#height", "54"), ("#spp", "8"), ("#name", "web test")] {
        let input = browser.find(id);
        input.clear();
        input.send_keys(v);
    }
    browser.find("#submit-button").click();

    // The job page: tiles appear on the canvas as they are verified.
    let id = browser.wait_until(
        "const m = location.hash.match(/^#\\/jobs\\/(\\d+)$/); return m && document.querySelector('#live') ? Number(m[1]) : null;",
        long,
    );
    let id = id.as_u64().unwrap();
    browser.wait_until("return Number(document.querySelector('#live').dataset.drawn) > 0;", long);
    browser.screenshot(&shots.join("job-live.png"));
    browser.wait_until("return document.querySelector('#job-state').textContent === 'done';", long);
    browser.wait_until("return document.querySelectorAll('#frames .thumb.done img').length === 2;", long);
    let job = api_json(&format!("{}/api/v1/jobs/{id}", demo.url), &demo.token);
    assert_eq!(job["name"], "web test");
    assert_eq!(job["settings"]["frames"], json!([1, 2]));
    assert_eq!((job["settings"]["width"].as_u64(), job["settings"]["spp"].as_u64()), (Some(96), Some(8)));
    assert_eq!(job["settings"]["denoise"], true, "the page's denoise box is ticked by default");
    assert_eq!(job["settings"]["progressive"], true, "the page's progressive box is ticked by default");
    let tiles = job["progress"]["tiles"].as_u64().unwrap();
    assert!(tiles > 0 && tiles % 6 == 0, "2 frames × 3 passes (1, 3, 4 samples) of each rectangle: {tiles}");
    assert!(
        browser.find("#progress-text").text().contains("2 / 2 frames"),
        "{}",
        browser.find("#progress-text").text()
    );
    browser.screenshot(&shots.join("job-done.png"));

    // Download frame 1's PNG through the browser: the API's bytes.
    browser.find("#frames .thumb[data-frame='1']").click();
    browser.wait_for("#frame-downloads button[data-format='png']", short).click();
    let saved = browser.wait_for_download("web_test-0001.png", short);
    let api_png = api_get(&format!("{}/api/v1/jobs/{id}/frames/1.png", demo.url), &demo.token);
    assert!(std::fs::read(&saved).unwrap() == api_png, "the browser's download differs from the API's frame");
    browser.find("#frame-downloads button[data-format='denoised.png']").click();
    let saved = browser.wait_for_download("web_test-0001.denoised.png", short);
    let api_denoised = api_get(&format!("{}/api/v1/jobs/{id}/frames/1.denoised.png", demo.url), &demo.token);
    assert!(std::fs::read(&saved).unwrap() == api_denoised, "the denoised download differs from the API's");
    assert!(api_denoised != api_png, "the denoised frame is not the raw one");
    browser.find("#download-all").click();
    let zip = browser.wait_for_download(&format!("web_test-job{id}.zip"), short);
    assert!(std::fs::read(zip).unwrap().starts_with(b"PK"));

    // A tile's proof: click the top-left pixel of the frame on the canvas
    // (drawn scaled and centred in its box).
    browser.execute(
        "const c = document.querySelector('#live'); const r = c.getBoundingClientRect();
         const s = Math.min(r.width / c.width, r.height / c.height);
         const x = r.left + (r.width - c.width * s) / 2 + s / 2, y = r.top + (r.height - c.height * s) / 2 + s / 2;
         c.dispatchEvent(new MouseEvent('click', { clientX: x, clientY: y, bubbles: true }));",
        &[],
    );
    browser.wait_for("#check-outcome", short);
    let tiles = api_json(&format!("{}/api/v1/jobs/{id}/tiles?frame=1", demo.url), &demo.token);
    let first = tiles["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["rect"]["x"] == 0 && t["rect"]["y"] == 0)
        .cloned()
        .unwrap();
    let detail = api_json(&format!("{}/api/v1/jobs/{id}/tiles/{}", demo.url, first["tile"]), &demo.token);
    assert_eq!(browser.find("#commitment").text(), detail["proof"]["commitment"].as_str().unwrap());
    browser.wait_until(
        "const i = document.querySelector('#tile-preview'); return i.complete && i.naturalWidth > 0;",
        short,
    );
    browser.screenshot(&shots.join("tile-proof.png"));

    // Workers: both demo workers, online, with their trust and credit.
    browser.find("a[href='#/workers']").click();
    browser.wait_until("return document.querySelectorAll('#workers tbody tr').length >= 2;", short);
    let table = browser.find("#workers").text();
    assert!(table.contains("local-0") && table.contains("local-1") && table.contains("online"), "{table}");
    browser.screenshot(&shots.join("workers.png"));

    // Drop a .gltf with its separate .bin (Blender's "glTF Separate") on
    // the page, as a drag from the desktop does.
    let (gltf, bin) = turntable_separate();
    browser.find("a[href='#/submit']").click();
    browser.wait_for("#drop", short);
    browser.execute(
        "const bytes = b => Uint8Array.from(atob(b), c => c.charCodeAt(0));
         const dt = new DataTransfer();
         dt.items.add(new File([bytes(arguments[0])], 'turntable.gltf', { type: 'model/gltf+json' }));
         dt.items.add(new File([bytes(arguments[1])], 'turntable.bin'));
         document.getElementById('drop').dispatchEvent(
             new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));",
        &[json!(b64(&gltf)), json!(b64(&bin))],
    );
    browser.wait_for("#submit-form", long);
    let summary = browser.find("#scene-summary").text();
    assert!(summary.contains("turntable.gltf") && summary.contains("+ 1 files"), "{summary}");
    for (id, v) in [("#frames", "1-8"), ("#width", "96"), ("#height", "54"), ("#spp", "32")] {
        let input = browser.find(id);
        input.clear();
        input.send_keys(v);
    }
    browser.find("#submit-button").click();
    // Cancel it while it runs, then retry it to the end.
    browser.wait_for("#cancel", long).click();
    browser.wait_until("return document.querySelector('#job-state').textContent === 'cancelled';", long);
    browser.wait_for("#retry", short).click();
    browser.wait_until("return document.querySelector('#job-state').textContent === 'done';", long);
    browser.screenshot(&shots.join("job-retried.png"));

    // A phone: the job page fits the screen's width.
    browser.set_viewport_size(390, 844);
    browser.goto(&format!("{}/#/jobs/{id}", demo.url));
    browser.wait_until("return document.querySelectorAll('#frames .thumb.done img').length === 2;", short);
    let overflow = browser.execute("return document.documentElement.scrollWidth - window.innerWidth;", &[]);
    assert!(overflow.as_i64().unwrap_or(1) <= 0, "the page is wider than a phone's screen by {overflow} px");
    browser.screenshot(&shots.join("job-phone.png"));

    let errors = console_errors(&browser, &["401", "422"]);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
