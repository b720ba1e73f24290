//! A small W3C WebDriver client for driving a real headless Chromium from integration tests.
//!
//! [`Browser::start`] launches `chromedriver` on a free loopback port and opens one headless
//! Chromium session through it; every other method is one (or a few) WebDriver commands sent with
//! `ureq`. The helper is meant for tests, so commands that fail panic with the command, the
//! WebDriver error code and its message; only starting can return an error, so that a test can
//! say clearly that Chromium or chromedriver is missing.
//!
//! ```ignore
//! let downloads = tempfile::tempdir().unwrap();
//! let browser = Browser::start(downloads.path(), 1280, 800).unwrap_or_else(|e| panic!("{e}"));
//! browser.goto("http://127.0.0.1:8080/");
//! browser.find("#render").click();
//! let status = browser.wait_for("#status.done", Duration::from_secs(10));
//! assert_eq!(status.text(), "done");
//! browser.screenshot(&artifacts_dir().join("render-done.png"));
//! ```
//!
//! Binaries: `chromedriver` and `chromium` (or `chromium-browser`, `google-chrome`) are looked up
//! on `PATH`; `TESSERA_CHROMEDRIVER` and `TESSERA_CHROMIUM` override them with explicit paths. On
//! Debian: `apt-get install chromium chromium-driver`.
//!
//! Quirks worth knowing (Chromium/chromedriver 148):
//! - In `--headless=new` the window size includes emulated browser chrome: a 800×600 window has a
//!   800×461 viewport. Use [`Browser::set_viewport_size`] when the page's size matters.
//! - Downloads land in the download directory without a prompt; Chromium writes
//!   `*.crdownload` files first and renames them when done ([`Browser::wait_for_download`]).
//!   An existing file of the same name makes Chromium pick `name (1).ext`, so use a fresh directory.
//! - Killing chromedriver does not end Chromium; dropping a [`Browser`] deletes the session (which
//!   quits Chromium) and kills Chromium's process itself if that fails.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

/// How long one WebDriver HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long chromedriver may take to answer `GET /status` with `ready: true`.
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the `wait_*` helpers poll.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The largest WebDriver response read (screenshots of big windows are a few MiB of base64).
const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;
/// The JSON key that marks a web element reference (W3C WebDriver, "web element identifier").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// WebDriver's codes for special keys, usable in [`Element::send_keys`] and
/// [`Browser::send_keys_active`] (e.g. `format!("hello{}", keys::ENTER)`).
#[allow(dead_code)]
pub mod keys {
    pub const BACKSPACE: &str = "\u{E003}";
    pub const TAB: &str = "\u{E004}";
    pub const ENTER: &str = "\u{E007}";
    pub const SHIFT: &str = "\u{E008}";
    pub const CONTROL: &str = "\u{E009}";
    pub const ESCAPE: &str = "\u{E00C}";
    pub const ARROW_LEFT: &str = "\u{E012}";
    pub const ARROW_UP: &str = "\u{E013}";
    pub const ARROW_RIGHT: &str = "\u{E014}";
    pub const ARROW_DOWN: &str = "\u{E015}";
    pub const DELETE: &str = "\u{E017}";
}

/// Where tests keep screenshots and other things worth looking at after a run:
/// `<workspace>/target/test-artifacts/web`, created on demand.
pub fn artifacts_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = manifest.parent().unwrap_or(manifest).join("target").join("test-artifacts").join("web");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// An error answered by chromedriver (`{"value": {"error", "message"}}`), or a transport failure.
#[derive(Debug, Clone)]
struct WdError {
    /// The W3C error code (`no such element`, `javascript error`, ...), or `transport` /
    /// `bad response` for failures below WebDriver.
    error: String,
    message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// The HTTP methods WebDriver uses.
#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    Post,
    Delete,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        })
    }
}

/// Sends one WebDriver request and unwraps its `value`, turning error values into [`WdError`].
fn request(agent: &ureq::Agent, method: Method, url: &str, body: &Value) -> Result<Value, WdError> {
    let response = match method {
        Method::Get => agent.get(url).call(),
        Method::Delete => agent.delete(url).call(),
        Method::Post => agent.post(url).send_json(body),
    };
    let mut response = response.map_err(|e| WdError { error: "transport".into(), message: e.to_string() })?;
    let status = response.status();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| WdError { error: "transport".into(), message: format!("reading the response: {e}") })?;
    let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| WdError {
        error: "bad response".into(),
        message: format!("HTTP {status}, not JSON ({e}): {}", String::from_utf8_lossy(&bytes[..bytes.len().min(500)])),
    })?;
    let value = match parsed {
        Value::Object(mut map) => map.remove("value").unwrap_or(Value::Null),
        other => other,
    };
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        let message = value.get("message").and_then(Value::as_str).unwrap_or("(no message)");
        // chromedriver appends "\n  (Session info: chrome=…)" to every message; it says nothing here.
        let message = message.split_once("\n  (Session info:").map_or(message, |(m, _)| m);
        return Err(WdError { error: error.to_owned(), message: message.to_owned() });
    }
    if !status.is_success() {
        return Err(WdError { error: "bad response".into(), message: format!("HTTP {status}: {value}") });
    }
    Ok(value)
}

/// Is this script result truthy the way JavaScript sees it?
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `text` cut to `max` characters, for error messages.
fn abbreviate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// Finds an executable: the path in `env_var` if set, else the first of `names` on `PATH`.
fn locate(env_var: &str, names: &[&str]) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{env_var}={} does not name a file", path.display()))
        };
    }
    let dirs: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    names.iter().flat_map(|name| dirs.iter().map(move |dir| dir.join(name))).find(|path| path.is_file()).ok_or_else(
        || {
            format!(
                "none of {names:?} found on PATH (set {env_var} to its path, or on Debian \
                 `apt-get install chromium chromium-driver`)"
            )
        },
    )
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding a free loopback port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("reading the free port: {e}"))
}

/// The chromedriver process; killed (and reaped) when dropped, so that a failed start cleans up.
struct Driver {
    child: Child,
    log: PathBuf,
}

impl Driver {
    /// What chromedriver wrote to stdout and stderr so far, for error messages.
    fn log(&self) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(text) if text.trim().is_empty() => "(chromedriver wrote nothing)".into(),
            Ok(text) => abbreviate(&text, 4000),
            Err(e) => format!("(reading {}: {e})", self.log.display()),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session driven through chromedriver. See the module docs.
pub struct Browser {
    agent: ureq::Agent,
    /// `http://127.0.0.1:<port>/session/<id>`: every session command's URL starts with this.
    session_url: String,
    download_dir: PathBuf,
    /// The browser's process id (`goog:processID`), killed on drop if deleting the session fails.
    browser_pid: Option<u64>,
    /// Kept only to be dropped: kills chromedriver.
    _driver: Driver,
    /// Holds chromedriver's log and Chromium's profile; removed after both are gone (fields drop
    /// after [`Browser::drop`] and in declaration order, so after `_driver`).
    _scratch: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session whose window
    /// is `width`×`height` (the viewport is smaller in height, see the module docs), downloads
    /// going to `download_dir` (created if missing) without prompting, and browser console logs
    /// captured for [`Browser::console`].
    ///
    /// Fails with a clear message when chromium or chromedriver is missing, chromedriver does not
    /// become ready within 20 s, or the session cannot be created (with chromedriver's output).
    pub fn start(download_dir: &Path, width: u32, height: u32) -> Result<Browser, String> {
        let chromedriver = locate("TESSERA_CHROMEDRIVER", &["chromedriver"])
            .map_err(|e| format!("chromedriver is not available: {e}"))?;
        let chromium = locate("TESSERA_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"])
            .map_err(|e| format!("Chromium is not available: {e}"))?;

        std::fs::create_dir_all(download_dir)
            .map_err(|e| format!("creating the download directory {}: {e}", download_dir.display()))?;
        let download_dir = download_dir
            .canonicalize()
            .map_err(|e| format!("resolving the download directory {}: {e}", download_dir.display()))?;
        let scratch = tempfile::Builder::new()
            .prefix("tessera-browser-")
            .tempdir()
            .map_err(|e| format!("creating a scratch directory: {e}"))?;
        let profile = scratch.path().join("profile");
        let log = scratch.path().join("chromedriver.log");

        let port = free_port()?;
        let log_file = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let log_file2 = log_file.try_clone().map_err(|e| format!("duplicating {}: {e}", log.display()))?;
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_file2)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", chromedriver.display()))?;
        let mut driver = Driver { child, log };

        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");

        // Wait for chromedriver to listen and report itself ready.
        let deadline = Instant::now() + DRIVER_READY_TIMEOUT;
        loop {
            if let Some(status) = driver.child.try_wait().map_err(|e| format!("polling chromedriver: {e}"))? {
                return Err(format!(
                    "chromedriver ({}) exited with {status} before becoming ready; its output:\n{}",
                    chromedriver.display(),
                    driver.log()
                ));
            }
            let status =
                agent.get(format!("{base}/status")).config().timeout_global(Some(Duration::from_secs(2))).build();
            let ready = match status.call() {
                Ok(mut response) => response
                    .body_mut()
                    .read_json::<Value>()
                    .ok()
                    .and_then(|v| v.pointer("/value/ready").and_then(Value::as_bool))
                    .unwrap_or(false),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "chromedriver ({}) was not ready on port {port} after {DRIVER_READY_TIMEOUT:?}; its output:\n{}",
                    chromedriver.display(),
                    driver.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-dev-shm-usage",
                            "--disable-gpu",
                            "--no-first-run",
                            "--no-default-browser-check",
                            // No background connections: this machine's network
                            // is closed, and they would only add noise and delay.
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--disable-quic",
                            format!("--window-size={width},{height}"),
                            format!("--user-data-dir={}", profile.display()),
                        ],
                        "prefs": {
                            "download.default_directory": download_dir,
                            "download.prompt_for_download": false,
                            "download.directory_upgrade": true,
                            // Several downloads from one page would otherwise ask for permission.
                            "profile.default_content_setting_values.automatic_downloads": 1,
                        },
                    },
                },
            },
        });
        let session = request(&agent, Method::Post, &format!("{base}/session"), &capabilities).map_err(|e| {
            format!(
                "chromedriver could not start a Chromium session ({}): {e}\nchromedriver's output:\n{}",
                chromium.display(),
                driver.log()
            )
        })?;
        let Some(id) = session.get("sessionId").and_then(Value::as_str) else {
            return Err(format!("chromedriver's new session has no sessionId: {session}"));
        };
        let browser_pid = session.pointer("/capabilities/goog:processID").and_then(Value::as_u64);
        Ok(Browser {
            agent,
            session_url: format!("{base}/session/{id}"),
            download_dir,
            browser_pid,
            _driver: driver,
            _scratch: scratch,
        })
    }

    /// Sends a session command (`path` is relative to `/session/{id}`), returning errors.
    fn try_cmd(&self, method: Method, path: &str, body: Value) -> Result<Value, WdError> {
        request(&self.agent, method, &format!("{}{path}", self.session_url), &body)
    }

    /// Sends a session command, panicking with the command, the error and its message.
    fn cmd(&self, method: Method, path: &str, body: Value) -> Value {
        self.try_cmd(method, path, body.clone()).unwrap_or_else(|e| {
            let body = if body.is_null() { String::new() } else { format!(" {}", abbreviate(&body.to_string(), 300)) };
            panic!("WebDriver {method} {path}{body} failed: {e}")
        })
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.cmd(Method::Post, "/url", json!({ "url": url }));
    }

    /// The current page's URL.
    pub fn url(&self) -> String {
        match self.cmd(Method::Get, "/url", Value::Null) {
            Value::String(url) => url,
            other => panic!("WebDriver GET /url answered {other}, not a string"),
        }
    }

    /// The first element matching the CSS selector, or `Err` (`no such element` when none does).
    fn try_find_raw(&self, css: &str) -> Result<Element<'_>, WdError> {
        let value = self.try_cmd(Method::Post, "/element", json!({ "using": "css selector", "value": css }))?;
        Ok(self.element_from(&value, css.to_owned()))
    }

    /// Turns a web element reference from a response into an [`Element`].
    fn element_from(&self, value: &Value, css: String) -> Element<'_> {
        let id = value
            .get(ELEMENT_KEY)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("WebDriver answered {value} for `{css}`, not an element reference"));
        Element { browser: self, id: id.to_owned(), css }
    }

    /// The first element matching the CSS selector; panics with the selector if there is none.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.try_find(css).unwrap_or_else(|| panic!("no element matches `{css}` on {}", self.url()))
    }

    /// The first element matching the CSS selector, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        match self.try_find_raw(css) {
            Ok(element) => Some(element),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("WebDriver POST /element (css `{css}`) failed: {e}"),
        }
    }

    /// Every element matching the CSS selector, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        match self.cmd(Method::Post, "/elements", json!({ "using": "css selector", "value": css })) {
            Value::Array(refs) => {
                refs.iter().enumerate().map(|(i, r)| self.element_from(r, format!("{css}[{i}]"))).collect()
            }
            other => panic!("WebDriver POST /elements (css `{css}`) answered {other}, not a list"),
        }
    }

    /// Polls until an element matching the CSS selector exists and is displayed, and returns it.
    /// On timeout, saves a screenshot into [`artifacts_dir`] and panics with the selector, the
    /// page's URL and the screenshot's path.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.try_find_raw(css) {
                // The element may go stale between finding it and asking; just poll again.
                Ok(element) => match element.try_displayed() {
                    Ok(true) => return element,
                    Ok(false) => "present but not displayed".to_owned(),
                    Err(e) => e.to_string(),
                },
                Err(e) if e.error == "no such element" => "no such element".to_owned(),
                Err(e) => panic!("WebDriver POST /element (css `{css}`) failed while waiting: {e}"),
            };
            if Instant::now() >= deadline {
                let shot = self.failure_screenshot(&format!("wait_for {css}"));
                panic!(
                    "timed out after {timeout:?} waiting for `{css}` to be displayed ({last}) on {}; screenshot: {shot}",
                    self.try_url()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Polls a script body (`return …;`, run like [`Browser::execute`] without arguments) until it
    /// returns a truthy value, and returns that value. JavaScript errors count as "not yet" (so
    /// `return document.querySelector('#x').textContent == 'done'` may run before `#x` exists).
    /// On timeout, saves a screenshot and panics with the last value or error.
    pub fn wait_until(&self, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.try_cmd(Method::Post, "/execute/sync", json!({ "script": script, "args": [] })) {
                Ok(value) if truthy(&value) => return value,
                Ok(value) => format!("last value: {value}"),
                Err(e) if e.error == "javascript error" => format!("last error: {e}"),
                Err(e) => panic!("WebDriver POST /execute/sync failed while waiting until `{script}`: {e}"),
            };
            if Instant::now() >= deadline {
                let shot = self.failure_screenshot("wait_until");
                panic!(
                    "timed out after {timeout:?} waiting until `{script}` on {} ({last}); screenshot: {shot}",
                    self.try_url()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Runs a synchronous script body (`return …;`) with `arguments` = `args`, returning its result
    /// as JSON (elements come back as `{"element-6066-…": id}` references).
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.cmd(Method::Post, "/execute/sync", json!({ "script": script, "args": args }))
    }

    /// Runs an asynchronous script body: its last argument, after `args`, is the callback to call
    /// with the result (`arguments[arguments.length - 1](value)`). Times out after 30 s.
    pub fn execute_async(&self, script: &str, args: &[Value]) -> Value {
        self.cmd(Method::Post, "/execute/async", json!({ "script": script, "args": args }))
    }

    /// The page's current rendering as a PNG, without writing it anywhere.
    fn try_screenshot_png(&self) -> Result<Vec<u8>, String> {
        let value = self.try_cmd(Method::Get, "/screenshot", Value::Null).map_err(|e| e.to_string())?;
        let encoded = value
            .as_str()
            .ok_or_else(|| format!("screenshot answered {}, not base64", abbreviate(&value.to_string(), 100)))?;
        base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|e| format!("decoding the screenshot: {e}"))
    }

    /// Saves a screenshot of the viewport as a PNG file at `path`, creating parent directories.
    pub fn screenshot(&self, path: &Path) {
        let png =
            self.try_screenshot_png().unwrap_or_else(|e| panic!("taking a screenshot for {}: {e}", path.display()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Saves a screenshot for a failure message; says where, or why there is none.
    fn failure_screenshot(&self, what: &str) -> String {
        let name: String =
            what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(60).collect::<String>();
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let path = artifacts_dir().join(format!("failure-{name}-{millis}.png"));
        match self.try_screenshot_png().and_then(|png| std::fs::write(&path, png).map_err(|e| e.to_string())) {
            Ok(()) => path.display().to_string(),
            Err(e) => format!("none ({e})"),
        }
    }

    /// The URL for an error message, without panicking again.
    fn try_url(&self) -> String {
        match self.try_cmd(Method::Get, "/url", Value::Null) {
            Ok(Value::String(url)) => url,
            Ok(other) => other.to_string(),
            Err(e) => format!("(unknown URL: {e})"),
        }
    }

    /// Resizes the browser window (outer size, see [`Browser::set_viewport_size`]).
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.cmd(Method::Post, "/window/rect", json!({ "width": width, "height": height }));
    }

    /// Resizes the window so that the page's viewport (`innerWidth`×`innerHeight`) is
    /// `width`×`height`, compensating for the browser chrome headless Chromium emulates.
    pub fn set_viewport_size(&self, width: u32, height: u32) {
        let size = self.execute("return [outerWidth - innerWidth, outerHeight - innerHeight];", &[]);
        let extra = |i: usize| size.get(i).and_then(Value::as_u64).unwrap_or(0) as u32;
        self.set_window_size(width + extra(0), height + extra(1));
    }

    /// The browser console's entries since the last call, as (level, message) pairs; levels are
    /// chromedriver's (`SEVERE` for `console.error` and failed loads, `WARNING`, `INFO`, `DEBUG`),
    /// messages look like `http://host/page 12:8 "boom"`.
    pub fn console(&self) -> Vec<(String, String)> {
        let body = json!({ "type": "browser" });
        // chromedriver's own endpoint; `/log` is the legacy (JSON wire) spelling of the same.
        let entries = self.try_cmd(Method::Post, "/se/log", body.clone()).or_else(|first| {
            self.try_cmd(Method::Post, "/log", body)
                .map_err(|second| format!("POST /se/log failed ({first}), and POST /log failed ({second})"))
        });
        let entries = entries.unwrap_or_else(|e| panic!("reading the browser console: {e}"));
        let Value::Array(entries) = entries else { panic!("the browser console log is {entries}, not a list") };
        entries
            .iter()
            .map(|entry| {
                let field = |name: &str| entry.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
                (field("level"), field("message"))
            })
            .collect()
    }

    /// Types `text` into whichever element has focus, as key presses (W3C actions); WebDriver's
    /// special keys ([`keys`]) are pressed as such.
    pub fn send_keys_active(&self, text: &str) {
        let strokes: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                let key = c.to_string();
                [json!({ "type": "keyDown", "value": key }), json!({ "type": "keyUp", "value": key })]
            })
            .collect();
        let actions = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": strokes }] });
        self.cmd(Method::Post, "/actions", actions);
        self.cmd(Method::Delete, "/actions", Value::Null);
    }

    /// The directory downloads go to (absolute).
    #[allow(dead_code)]
    pub fn download_dir(&self) -> &Path {
        &self.download_dir
    }

    /// Waits until `file_name` exists in the download directory and no download is in progress
    /// there (no `*.crdownload`), and returns its path; panics on timeout, listing the directory.
    pub fn wait_for_download(&self, file_name: &str, timeout: Duration) -> PathBuf {
        let path = self.download_dir.join(file_name);
        let deadline = Instant::now() + timeout;
        loop {
            let names: Vec<String> = std::fs::read_dir(&self.download_dir)
                .unwrap_or_else(|e| panic!("listing {}: {e}", self.download_dir.display()))
                .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            let in_progress = names.iter().any(|n| n.ends_with(".crdownload"));
            if path.is_file() && !in_progress {
                return path;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for the download {file_name} in {} (it holds {names:?})",
                    self.download_dir.display()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Browser {
    /// Deletes the session (which quits Chromium); if that fails, kills Chromium's process, since
    /// it outlives chromedriver. chromedriver itself is killed when `_driver` drops right after.
    fn drop(&mut self) {
        let quit = self.agent.delete(&self.session_url).config().timeout_global(Some(Duration::from_secs(10))).build();
        let deleted = quit.call().is_ok_and(|r| r.status().is_success());
        if !deleted {
            if let Some(pid) = self.browser_pid {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
            }
        }
    }
}

/// An element of the current page (a W3C web element reference), tied to its [`Browser`].
pub struct Element<'a> {
    browser: &'a Browser,
    /// chromedriver's id for the element.
    id: String,
    /// The selector it was found by (`css[i]` for the i-th of [`Browser::find_all`]), for messages.
    css: String,
}

impl Element<'_> {
    /// Sends an element command (`path` relative to `/element/{id}`), panicking on errors.
    fn cmd(&self, method: Method, path: &str, body: Value) -> Value {
        self.try_cmd(method, path, body.clone()).unwrap_or_else(|e| {
            let body = if body.is_null() { String::new() } else { format!(" {}", abbreviate(&body.to_string(), 300)) };
            panic!("WebDriver {method} /element/…{path}{body} on `{}` failed: {e}", self.css)
        })
    }

    /// Sends an element command, returning errors.
    fn try_cmd(&self, method: Method, path: &str, body: Value) -> Result<Value, WdError> {
        self.browser.try_cmd(method, &format!("/element/{}{path}", self.id), body)
    }

    /// The reference to pass this element to [`Browser::execute`] as an argument.
    #[allow(dead_code)]
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    /// Scrolls the element into view and clicks its centre (fails if something covers it).
    pub fn click(&self) {
        self.cmd(Method::Post, "/click", json!({}));
    }

    /// Focuses the element and types `text` into it. For `<input type=file>`, `text` is an
    /// absolute local path (several separated by `\n` for `multiple`), which selects that file.
    pub fn send_keys(&self, text: &str) {
        self.cmd(Method::Post, "/value", json!({ "text": text }));
    }

    /// Empties an editable element (input, textarea, contenteditable).
    pub fn clear(&self) {
        self.cmd(Method::Post, "/clear", json!({}));
    }

    /// The element's rendered text (as `innerText`: empty for hidden elements).
    pub fn text(&self) -> String {
        match self.cmd(Method::Get, "/text", Value::Null) {
            Value::String(text) => text,
            other => panic!("WebDriver GET /element/…/text on `{}` answered {other}, not a string", self.css),
        }
    }

    /// The DOM property `name` if the element has one (strings and numbers as text; booleans as
    /// `Some("true")` or `None`), else the HTML attribute `name`, else `None`. So `attr("value")`
    /// is the current value of an input, `attr("checked")` whether it is checked, and
    /// `attr("data-x")` the attribute.
    pub fn attr(&self, name: &str) -> Option<String> {
        match self.cmd(Method::Get, &format!("/property/{name}"), Value::Null) {
            Value::String(s) => return Some(s),
            Value::Number(n) => return Some(n.to_string()),
            Value::Bool(true) => return Some("true".into()),
            Value::Bool(false) => return None,
            Value::Null | Value::Array(_) | Value::Object(_) => {}
        }
        match self.cmd(Method::Get, &format!("/attribute/{name}"), Value::Null) {
            Value::String(s) => Some(s),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Whether the element is displayed, returning errors (e.g. `stale element reference`).
    fn try_displayed(&self) -> Result<bool, WdError> {
        let value = self.try_cmd(Method::Get, "/displayed", Value::Null)?;
        Ok(value.as_bool().unwrap_or(false))
    }

    /// Whether the element is displayed (WebDriver's "element displayedness").
    pub fn is_displayed(&self) -> bool {
        self.try_displayed()
            .unwrap_or_else(|e| panic!("WebDriver GET /element/…/displayed on `{}` failed: {e}", self.css))
    }
}

/// A page with a file input, a button that writes text (after a short delay), a download link
/// and a `console.error`, served from a thread; the browser must see all of it working.
#[test]
fn chromium_drives_a_page() {
    use std::io::{Read, Write};

    const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>browser smoke</title></head><body>
<h1>Tessera browser smoke test</h1>
<input type="file" id="f">
<input type="text" id="t">
<button id="b" onclick="setTimeout(function () {
  var out = document.getElementById('out'); out.textContent = 'clicked!'; out.hidden = false; }, 150)">Click</button>
<div id="out" hidden></div>
<a id="dl" download href="/file.bin">download</a>
<ul><li>one</li><li>two</li><li>three</li></ul>
<script>console.error("boom");</script>
</body></html>"#;
    let file_bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();

    // A minimal HTTP server: one thread per connection (Chromium opens idle preconnections).
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the page server");
    let base = format!("http://{}", listener.local_addr().expect("page server address"));
    let served = file_bytes.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let served = served.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, kind, body): (&str, &str, &[u8]) = match path {
                    "/" => ("200 OK", "text/html; charset=utf-8", PAGE.as_bytes()),
                    "/file.bin" => ("200 OK", "application/octet-stream", &served),
                    "/favicon.ico" => ("204 No Content", "image/x-icon", b""),
                    _ => ("404 Not Found", "text/plain", b"not found"),
                };
                let header = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(header.as_bytes()).and_then(|()| stream.write_all(body));
            });
        }
    });

    let downloads = tempfile::tempdir().expect("download directory");
    let uploads = tempfile::tempdir().expect("upload directory");
    let upload = uploads.path().join("upload-me.txt");
    std::fs::write(&upload, "some text to upload").expect("writing the file to upload");

    let browser = Browser::start(downloads.path(), 1024, 768).unwrap_or_else(|e| panic!("{e}"));
    browser.goto(&format!("{base}/"));
    assert_eq!(browser.url(), format!("{base}/"));
    assert_eq!(browser.execute("return document.title;", &[]), json!("browser smoke"));

    // Finding.
    assert!(browser.try_find("#nope").is_none());
    let items: Vec<String> = browser.find_all("li").iter().map(Element::text).collect();
    assert_eq!(items, ["one", "two", "three"]);
    assert!(!browser.find("#out").is_displayed());

    // Clicking, then waiting for what the click does a little later.
    browser.find("#b").click();
    let out = browser.wait_for("#out", Duration::from_secs(5));
    assert_eq!(out.text(), "clicked!");
    let text = browser.wait_until("return document.getElementById('out').textContent;", Duration::from_secs(5));
    assert_eq!(text, json!("clicked!"));

    // A file input takes a local absolute path.
    browser.find("#f").send_keys(upload.to_str().expect("UTF-8 upload path"));
    let name = browser.execute("return document.getElementById('f').files[0].name;", &[]);
    assert_eq!(name, json!("upload-me.txt"));

    // Typing, into the focused element and into an element, and clearing.
    let input = browser.find("#t");
    input.click();
    browser.send_keys_active("hello");
    assert_eq!(input.attr("value").as_deref(), Some("hello"));
    input.clear();
    assert_eq!(input.attr("value").as_deref(), Some(""));
    input.send_keys("world");
    assert_eq!(input.attr("value").as_deref(), Some("world"));
    assert_eq!(input.attr("type").as_deref(), Some("text"));
    assert_eq!(input.attr("data-missing"), None);
    let same = browser.execute("return arguments[0].id;", &[input.as_arg()]);
    assert_eq!(same, json!("t"));

    // Scripts, synchronous and asynchronous.
    let doubled = browser.execute_async(
        "const done = arguments[arguments.length - 1]; setTimeout(() => done(arguments[0] * 2), 50);",
        &[json!(21)],
    );
    assert_eq!(doubled, json!(42));

    // A download lands in the download directory, byte for byte, without a prompt.
    browser.find("#dl").click();
    let downloaded = browser.wait_for_download("file.bin", Duration::from_secs(10));
    assert_eq!(std::fs::read(&downloaded).expect("reading the download"), file_bytes);

    // The console.error shows up in the console log, once.
    let console = browser.console();
    assert!(
        console.iter().any(|(level, message)| level == "SEVERE" && message.contains("\"boom\"")),
        "no console.error(\"boom\") in {console:?}"
    );
    assert!(!browser.console().iter().any(|(_, message)| message.contains("boom")), "console() repeats entries");

    // Window and viewport sizes.
    browser.set_viewport_size(800, 600);
    assert_eq!(browser.execute("return [innerWidth, innerHeight];", &[]), json!([800, 600]));

    // Screenshots.
    let shot = artifacts_dir().join("browser-smoke.png");
    let _ = std::fs::remove_file(&shot);
    browser.screenshot(&shot);
    let png = std::fs::read(&shot).expect("reading the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", shot.display());
}
