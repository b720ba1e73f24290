//! The HTTP API (docs/api.md) in process: `http::app` driven with
//! `tower::ServiceExt::oneshot`, on a real farm (SQLite in a tempdir, a QUIC
//! endpoint on loopback) with in-process workers where frames are needed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

use tessera_coordinator::farm::{lock, Farm};
use tessera_coordinator::http::{app, AppState};
use tessera_store::{Scope, TokenKind};
use tessera_worker::client::{Worker, WorkerConfig, WorkerError};

use crate::farm::{runtime, scenes, test_config};
use crate::{guest, turntable_separate};

// ---- the farm and its tokens ----

/// A farm with its API and tokens of each kind.
struct Api {
    dir: tempfile::TempDir,
    farm: Arc<Farm>,
    app: Router,
    read: String,
    submit: String,
    /// read + submit, not admin.
    read_submit: String,
    admin: String,
    revoked: String,
    /// The worker join token (not an API token).
    worker: String,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let farm = Arc::new(Farm::start(test_config(&dir.path().join("coord"))).await.unwrap());
    let worker = farm.first_token().expect("a first worker token on a new data dir").to_string();
    let (read, submit, read_submit, admin, revoked) = {
        let mut store = lock(farm.store());
        let mut make =
            |label: &str, scopes: &[Scope]| store.create_token_scoped(TokenKind::Api, label, scopes, now_ms()).unwrap();
        let read = make("read", &[Scope::Read]).1;
        let submit = make("submit", &[Scope::Submit]).1;
        let read_submit = make("read+submit", &[Scope::Read, Scope::Submit]).1;
        let admin = make("admin", &[Scope::Admin]).1;
        let (revoked_id, revoked) = make("revoked", &[Scope::Admin]);
        assert!(store.revoke_token(revoked_id).unwrap());
        (read, submit, read_submit, admin, revoked)
    };
    let app = app(AppState::new(farm.clone(), Some(Arc::new(guest("pathtracer").to_vec()))));
    Api { dir, farm, app, read, submit, read_submit, admin, revoked, worker }
}

/// An in-process worker on QUIC loopback; `stop` ends it cleanly.
struct TestWorker {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

impl TestWorker {
    fn start(api: &Api, name: &str) -> TestWorker {
        let mut c = WorkerConfig::new(
            api.farm.quic_addr().to_string(),
            api.worker.clone(),
            api.farm.fingerprint(),
            api.dir.path().join(name),
        );
        c.slots = 1;
        c.name = name.to_string();
        c.idle_timeout = Duration::from_secs(2);
        c.max_backoff = Duration::from_millis(500);
        let w = Worker::new(c).unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        TestWorker { stop, task: tokio::spawn(async move { w.run(stopped).await }) }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("worker stops").unwrap().unwrap();
    }
}

// ---- requests ----

fn request(method: Method, uri: &str, token: Option<&str>, body: Body) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(body).unwrap()
}

async fn send(app: &Router, req: Request<Body>) -> Response {
    app.clone().oneshot(req).await.unwrap()
}

async fn call(app: &Router, method: Method, uri: &str, token: Option<&str>) -> Response {
    send(app, request(method, uri, token, Body::empty())).await
}

async fn bytes(r: Response) -> Bytes {
    axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap()
}

/// The status and the body as JSON (panics if the body is not JSON).
async fn json_of(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let b = bytes(r).await;
    let v = serde_json::from_slice(&b)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {:?}", String::from_utf8_lossy(&b)));
    (status, v)
}

/// Asserts an error response: `status`, JSON with `error` and `code`.
/// Returns the message.
#[track_caller]
fn check_error(status: StatusCode, body: &Value, want: StatusCode, what: &str) -> String {
    assert_eq!(status, want, "{what}: {body}");
    let (Some(error), Some(code)) = (body["error"].as_str(), body["code"].as_str()) else {
        panic!("{what}: an error body has `error` and `code`: {body}")
    };
    assert!(!error.is_empty() && !code.is_empty(), "{what}: {body}");
    error.to_string()
}

async fn expect_error(r: Response, want: StatusCode, what: &str) -> String {
    let (status, body) = json_of(r).await;
    check_error(status, &body, want, what)
}

async fn get_json(app: &Router, uri: &str, token: &str) -> Value {
    let (status, v) = json_of(call(app, Method::GET, uri, Some(token)).await).await;
    assert_eq!(status, StatusCode::OK, "GET {uri}: {v}");
    v
}

/// A form part: name, file name, bytes.
type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

fn settings(s: &str) -> Part<'_> {
    ("settings", None, s.as_bytes())
}

/// A `multipart/form-data` body of `parts`.
fn multipart(boundary: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = file {
            body.extend_from_slice(format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

const BOUNDARY: &str = "tessera-api-test-5c1f";

fn submit_request(token: Option<&str>, parts: &[Part<'_>]) -> Request<Body> {
    let mut r = request(Method::POST, "/api/v1/jobs", token, Body::from(multipart(BOUNDARY, parts)));
    r.headers_mut().insert(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}").parse().unwrap());
    r
}

fn turntable() -> Vec<u8> {
    std::fs::read(scenes().join("turntable.glb")).unwrap()
}

/// The tiny render the tests ask for.
const SMALL: &str = r#"{"frames":"1-2","width":32,"height":18,"spp":2,"formats":["png"]}"#;

/// Submits the turntable with `settings`; returns the Job (asserting 201).
async fn submit_turntable(api: &Api, settings: &str) -> Value {
    let scene = turntable();
    let r = send(
        &api.app,
        submit_request(
            Some(&api.submit),
            &[("settings", None, settings.as_bytes()), ("scene", Some("turntable.glb"), &scene)],
        ),
    )
    .await;
    let (status, job) = json_of(r).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    job
}

/// Polls GET /jobs/{id} until its state is `state`.
async fn wait_state(api: &Api, id: u64, state: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let job = get_json(&api.app, &format!("/api/v1/jobs/{id}"), &api.read).await;
        if job["state"] == state {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never got {state}: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- server-sent events ----

/// Reads server-sent events from a response body.
struct Sse {
    body: axum::body::BodyDataStream,
    buf: String,
}

impl Sse {
    fn new(r: Response) -> Sse {
        Sse { body: r.into_body().into_data_stream(), buf: String::new() }
    }

    /// The next event (name, data), skipping comments; panics after `limit`.
    async fn next(&mut self, limit: Duration) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !data.is_empty() {
                    let value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data {data:?}: {e}"));
                    return (name, value);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("an event before the timeout")
                .expect("the stream goes on")
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

// ---- 1. every route: tokens, scopes, bad input ----

/// The routes of docs/api.md that need a token, with the scope each needs
/// (`{id}` is a job id).
const GUARDED: &[(&str, &str, Scope)] = &[
    ("GET", "/api/v1/status", Scope::Read),
    ("GET", "/api/v1/jobs", Scope::Read),
    ("POST", "/api/v1/jobs", Scope::Submit),
    ("GET", "/api/v1/jobs/{id}", Scope::Read),
    ("POST", "/api/v1/jobs/{id}/cancel", Scope::Submit),
    ("POST", "/api/v1/jobs/{id}/retry", Scope::Submit),
    ("DELETE", "/api/v1/jobs/{id}", Scope::Admin),
    ("GET", "/api/v1/jobs/{id}/frames", Scope::Read),
    ("GET", "/api/v1/jobs/{id}/frames/1.png", Scope::Read),
    ("GET", "/api/v1/jobs/{id}/archive", Scope::Read),
    ("GET", "/api/v1/jobs/{id}/log", Scope::Read),
    ("GET", "/api/v1/jobs/{id}/events", Scope::Read),
    ("GET", "/api/v1/events", Scope::Read),
    ("GET", "/api/v1/workers", Scope::Read),
    ("POST", "/api/v1/workers/0000000000000000000000000000000000000000000000000000000000000000/clear", Scope::Admin),
    ("GET", "/api/v1/ledger", Scope::Read),
    ("GET", "/api/v1/proof/epochs", Scope::Read),
    ("GET", "/api/v1/jobs/{id}/tiles", Scope::Read),
    ("GET", "/api/v1/jobs/{id}/tiles/0", Scope::Read),
    ("GET", "/api/v1/jobs/{id}/tiles/0/preview.png", Scope::Read),
    ("GET", "/api/v1/jobs/{id}/frames/1.thumb.png", Scope::Read),
    ("POST", "/api/v1/scenes/inspect", Scope::Submit),
    ("POST", "/api/v1/links", Scope::Read),
];

#[test]
fn a_revoked_token_stops_working_within_the_token_ttl() {
    runtime().block_on(async {
        let api = api().await;
        let (id, secret) =
            lock(api.farm.store()).create_token_scoped(TokenKind::Api, "brief", &[Scope::Read], now_ms()).unwrap();
        assert_eq!(call(&api.app, Method::GET, "/api/v1/status", Some(&secret)).await.status(), StatusCode::OK);
        // `tessera token revoke` writes the store beside the running farm.
        assert!(lock(api.farm.store()).revoke_token(id).unwrap());
        tokio::time::sleep(tessera_coordinator::api::auth::TOKEN_TTL + std::time::Duration::from_millis(200)).await;
        let r = call(&api.app, Method::GET, "/api/v1/status", Some(&secret)).await;
        expect_error(r, StatusCode::UNAUTHORIZED, "a revoked token after the TTL").await;
    });
}

#[test]
fn every_route_wants_a_live_token_with_its_scope() {
    runtime().block_on(async {
        let api = api().await;
        let id = submit_turntable(&api, SMALL).await["id"].as_u64().unwrap();
        for &(method, path, scope) in GUARDED {
            let uri = path.replace("{id}", &id.to_string());
            let m: Method = method.parse().unwrap();
            let what = format!("{method} {uri}");
            // No token, a malformed header, an unknown, a revoked and a worker token: 401.
            expect_error(call(&api.app, m.clone(), &uri, None).await, StatusCode::UNAUTHORIZED, &what).await;
            let mut r = request(m.clone(), &uri, None, Body::empty());
            r.headers_mut().insert(header::AUTHORIZATION, format!("Basic {}", api.admin).parse().unwrap());
            expect_error(send(&api.app, r).await, StatusCode::UNAUTHORIZED, &format!("{what} (Basic)")).await;
            for bad in ["ta_0000", "", api.revoked.as_str(), api.worker.as_str()] {
                let r = call(&api.app, m.clone(), &uri, Some(bad)).await;
                expect_error(r, StatusCode::UNAUTHORIZED, &format!("{what} with {bad:?}")).await;
            }
            // Tokens without the scope: 403.
            let lacking: Vec<&str> = match scope {
                Scope::Read => vec![api.submit.as_str()],
                Scope::Submit => vec![api.read.as_str()],
                Scope::Admin => vec![api.read.as_str(), api.submit.as_str(), api.read_submit.as_str()],
            };
            for t in lacking {
                let r = call(&api.app, m.clone(), &uri, Some(t)).await;
                let msg = expect_error(r, StatusCode::FORBIDDEN, &what).await;
                assert!(msg.contains(scope.as_str()), "{what}: the 403 names the scope: {msg}");
            }
            // The scope, or admin, gets past the guard.
            let holding: Vec<&str> = match scope {
                Scope::Read => vec![api.read.as_str(), api.read_submit.as_str(), api.admin.as_str()],
                Scope::Submit => vec![api.submit.as_str(), api.read_submit.as_str(), api.admin.as_str()],
                Scope::Admin => vec![api.admin.as_str()],
            };
            for t in holding {
                let r = call(&api.app, m.clone(), &uri, Some(t)).await;
                let s = r.status();
                assert!(s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN, "{what}: {s}");
                assert!(!s.is_server_error(), "{what}: {s}");
            }
        }
        // `bearer` in lower case is accepted too.
        let mut r = request(Method::GET, "/api/v1/jobs", None, Body::empty());
        r.headers_mut().insert(header::AUTHORIZATION, format!("bearer {}", api.read).parse().unwrap());
        assert_eq!(send(&api.app, r).await.status(), StatusCode::OK);

        // No token needed: health, metrics, the OpenAPI document.
        let (status, health) = json_of(call(&api.app, Method::GET, "/api/v1/health", None).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(health["status"], "ok");
        assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
        assert!(health["uptime_s"].is_u64() && health["workers"] == 0, "{health}");
        assert_eq!(health["jobs_active"], 1, "{health}");
        let r = call(&api.app, Method::GET, "/metrics", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let ct = r.headers()[header::CONTENT_TYPE].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/plain"), "{ct}");
        let text = String::from_utf8(bytes(r).await.to_vec()).unwrap();
        for name in [
            "tessera_tiles_done_total",
            "tessera_jobs{state=\"running\"}",
            "tessera_workers_connected",
            "tessera_http_requests_total{code=\"4xx\"}",
            "tessera_uptime_seconds",
        ] {
            assert!(text.contains(name), "metrics lack {name}:\n{text}");
        }
        let r = call(&api.app, Method::GET, "/api/openapi.json", None).await;
        assert_eq!(r.status(), StatusCode::OK);
    });
}

#[test]
fn job_routes_without_workers_and_bad_input() {
    runtime().block_on(async {
        let api = api().await;
        let app = &api.app;
        let job = submit_turntable(&api, SMALL).await;
        let id = job["id"].as_u64().unwrap();
        assert!(matches!(job["state"].as_str(), Some("queued" | "running")), "{job}");
        // Once the core has loaded it, it stays running (no workers): the
        // filtered reads below see one state.
        wait_state(&api, id, "running", Duration::from_secs(30)).await;

        // Read routes on a job nobody renders.
        let got = get_json(app, &format!("/api/v1/jobs/{id}"), &api.read).await;
        assert_eq!(got["id"], id);
        assert_eq!(got["progress"]["tiles_done"], 0);
        assert!(got["progress"]["tiles"].as_u64().unwrap() > 0);
        let list = get_json(app, "/api/v1/jobs", &api.read).await;
        assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
        let state = got["state"].as_str().unwrap().to_string();
        let list = get_json(app, &format!("/api/v1/jobs?state={state}"), &api.read).await;
        assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
        let list = get_json(app, "/api/v1/jobs?state=done", &api.read).await;
        assert_eq!(list["jobs"], json!([]));
        // `limit` is "at most this many".
        let list = get_json(app, "/api/v1/jobs?limit=0", &api.read).await;
        assert_eq!(list["jobs"], json!([]), "limit=0");
        let list = get_json(app, "/api/v1/jobs?limit=1", &api.read).await;
        assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
        for bad in ["/api/v1/jobs?state=nope", "/api/v1/jobs?state=", "/api/v1/jobs?limit=-1", "/api/v1/jobs?limit=x"] {
            expect_error(call(app, Method::GET, bad, Some(&api.read)).await, StatusCode::BAD_REQUEST, bad).await;
        }
        let summary = get_json(app, "/api/v1/status", &api.read).await;
        assert_eq!(summary["workers"], 0);
        assert_eq!(summary["jobs"][&state], 1, "{summary}");
        let frames = get_json(app, &format!("/api/v1/jobs/{id}/frames"), &api.read).await;
        assert_eq!(frames, json!({"stem": "turntable", "frames": []}));
        // The log is written by the store's writer in its next group
        // commit, a moment after the submission was answered.
        let mut log = get_json(app, &format!("/api/v1/jobs/{id}/log"), &api.read).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log["entries"].as_array().unwrap().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            log = get_json(app, &format!("/api/v1/jobs/{id}/log"), &api.read).await;
        }
        let entries = log["entries"].as_array().unwrap();
        assert!(!entries.is_empty(), "the plan is logged: {log}");
        let last = entries.last().unwrap()["seq"].as_u64().unwrap();
        let later = get_json(app, &format!("/api/v1/jobs/{id}/log?after={last}"), &api.read).await;
        assert_eq!(later["entries"], json!([]));
        expect_error(
            call(app, Method::GET, &format!("/api/v1/jobs/{id}/log?after=x"), Some(&api.read)).await,
            StatusCode::BAD_REQUEST,
            "log?after=x",
        )
        .await;
        let workers = get_json(app, "/api/v1/workers", &api.read).await;
        assert_eq!(workers, json!({"workers": []}));

        // Frames not rendered yet, wrong names, formats not asked for.
        for (file, what) in [
            ("1.png", "not finished"),
            ("1.exr", "not asked for exr"),
            ("7.png", "not a frame of the job"),
            ("x.gif", "bad name"),
            ("1.gif", "bad format"),
            ("one.png", "bad number"),
            ("1", "no extension"),
        ] {
            let uri = format!("/api/v1/jobs/{id}/frames/{file}");
            expect_error(call(app, Method::GET, &uri, Some(&api.read)).await, StatusCode::NOT_FOUND, what).await;
        }
        for bad in ["gif", "png,gif", "", "png,,exr"] {
            let uri = format!("/api/v1/jobs/{id}/archive?formats={bad}");
            expect_error(call(app, Method::GET, &uri, Some(&api.read)).await, StatusCode::BAD_REQUEST, &uri).await;
        }
        // An archive of no frames is an empty, valid ZIP.
        let r = call(app, Method::GET, &format!("/api/v1/jobs/{id}/archive"), Some(&api.read)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let zip = zip::ZipArchive::new(std::io::Cursor::new(bytes(r).await.to_vec())).unwrap();
        assert_eq!(zip.len(), 0);

        // A job's event stream starts with a snapshot.
        let r = call(app, Method::GET, &format!("/api/v1/jobs/{id}/events"), Some(&api.read)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/event-stream"));
        let (name, data) = Sse::new(r).next(Duration::from_secs(5)).await;
        assert_eq!(name, "job");
        assert_eq!(data["job"], id);
        assert_eq!(data["state"], state.as_str());

        // Not a job id, or no such job: 404 JSON on every job route.
        for bad in ["x", "-1", "1.5", "99999", "18446744073709551616", "%20"] {
            for (method, path) in [
                ("GET", "/api/v1/jobs/{id}"),
                ("POST", "/api/v1/jobs/{id}/cancel"),
                ("POST", "/api/v1/jobs/{id}/retry"),
                ("DELETE", "/api/v1/jobs/{id}"),
                ("GET", "/api/v1/jobs/{id}/frames"),
                ("GET", "/api/v1/jobs/{id}/frames/1.png"),
                ("GET", "/api/v1/jobs/{id}/archive"),
                ("GET", "/api/v1/jobs/{id}/log"),
                ("GET", "/api/v1/jobs/{id}/events"),
            ] {
                let uri = path.replace("{id}", bad);
                let r = call(app, method.parse().unwrap(), &uri, Some(&api.admin)).await;
                let msg = expect_error(r, StatusCode::NOT_FOUND, &format!("{method} {uri}")).await;
                assert!(!msg.contains("no such route"), "{method} {uri}: {msg}");
            }
        }
        // Unknown routes under /api and wrong methods: JSON too.
        for (method, uri, want) in [
            ("GET", "/api/v1/nope", StatusCode::NOT_FOUND),
            ("GET", "/api", StatusCode::NOT_FOUND),
            ("GET", "/api/v2/jobs", StatusCode::NOT_FOUND),
            ("PUT", "/api/v1/jobs", StatusCode::METHOD_NOT_ALLOWED),
            ("PATCH", "/api/v1/jobs/1", StatusCode::METHOD_NOT_ALLOWED),
            ("POST", "/api/v1/workers", StatusCode::METHOD_NOT_ALLOWED),
            ("DELETE", "/api/v1/health", StatusCode::METHOD_NOT_ALLOWED),
        ] {
            let r = call(app, method.parse().unwrap(), uri, Some(&api.admin)).await;
            expect_error(r, want, &format!("{method} {uri}")).await;
        }

        // Running: retry and delete are conflicts.
        let uri = format!("/api/v1/jobs/{id}/retry");
        let msg =
            expect_error(call(app, Method::POST, &uri, Some(&api.submit)).await, StatusCode::CONFLICT, &uri).await;
        assert!(msg.contains("retr"), "{msg}");
        let uri = format!("/api/v1/jobs/{id}");
        expect_error(call(app, Method::DELETE, &uri, Some(&api.admin)).await, StatusCode::CONFLICT, "delete running")
            .await;
        // Cancel, twice: the second changes nothing.
        for _ in 0..2 {
            let (status, job) =
                json_of(call(app, Method::POST, &format!("/api/v1/jobs/{id}/cancel"), Some(&api.submit)).await).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            assert_eq!(job["state"], "cancelled", "{job}");
            assert!(job["finished_ms"].is_u64(), "{job}");
        }
        let list = get_json(app, "/api/v1/jobs?state=cancelled", &api.read).await;
        assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
        // Retry: running again.
        let (status, job) =
            json_of(call(app, Method::POST, &format!("/api/v1/jobs/{id}/retry"), Some(&api.submit)).await).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        assert!(matches!(job["state"].as_str(), Some("queued" | "running")), "{job}");
        // Cancel again, then delete: gone.
        let r = call(app, Method::POST, &format!("/api/v1/jobs/{id}/cancel"), Some(&api.submit)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = call(app, Method::DELETE, &format!("/api/v1/jobs/{id}"), Some(&api.admin)).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(bytes(r).await.is_empty());
        let r = call(app, Method::GET, &format!("/api/v1/jobs/{id}"), Some(&api.read)).await;
        expect_error(r, StatusCode::NOT_FOUND, "deleted job").await;
        let r = call(app, Method::DELETE, &format!("/api/v1/jobs/{id}"), Some(&api.admin)).await;
        expect_error(r, StatusCode::NOT_FOUND, "deleted twice").await;
        assert_eq!(get_json(app, "/api/v1/jobs", &api.read).await, json!({"jobs": []}));
    });
}

/// Retry right after cancel (a quick second click): the cancel the API has
/// answered must be what retry sees, though the store is written behind
/// the core. It raced before `Farm::retry` waited for the store writer.
#[test]
fn retry_right_after_cancel_is_never_a_conflict() {
    runtime().block_on(async {
        let api = api().await;
        let app = &api.app;
        let id = submit_turntable(&api, SMALL).await["id"].as_u64().unwrap();
        wait_state(&api, id, "running", Duration::from_secs(30)).await;
        for round in 0..25 {
            let (status, job) =
                json_of(call(app, Method::POST, &format!("/api/v1/jobs/{id}/cancel"), Some(&api.submit)).await).await;
            assert_eq!((status, job["state"].as_str()), (StatusCode::OK, Some("cancelled")), "round {round}");
            let (status, job) =
                json_of(call(app, Method::POST, &format!("/api/v1/jobs/{id}/retry"), Some(&api.submit)).await).await;
            assert_eq!(status, StatusCode::OK, "round {round}: {job}");
        }
        // And delete right after cancel leaves nothing behind.
        let r = call(app, Method::POST, &format!("/api/v1/jobs/{id}/cancel"), Some(&api.submit)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = call(app, Method::DELETE, &format!("/api/v1/jobs/{id}"), Some(&api.admin)).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(lock(api.farm.store()).job_log(id, 0, 10).unwrap().is_empty(), "the job's log is gone too");
    });
}

// ---- 2. submitting, rendering, downloading ----

#[test]
fn a_submitted_job_renders_and_its_frames_download() {
    runtime().block_on(async {
        let api = api().await;
        let app = &api.app;
        let job = submit_turntable(&api, SMALL).await;
        let id = job["id"].as_u64().unwrap();
        assert_eq!(job["name"], "turntable.glb");
        let s = &job["settings"];
        assert_eq!(s["frames"], json!([1, 2]), "{job}");
        assert_eq!((s["width"].as_u64(), s["height"].as_u64(), s["spp"].as_u64()), (Some(32), Some(18), Some(2)));
        assert_eq!(s["formats"], json!(["png"]));
        assert_eq!(s["view_transform"], "agx");
        assert_eq!(s["bounces"], 8);
        assert_eq!(s["shading"], "auto");
        assert_eq!(s["engine"], "cpu");
        assert_eq!(s["camera"], Value::Null);
        assert!(job["error"].is_null() && job["finished_ms"].is_null(), "{job}");
        assert_eq!(job["progress"]["frames"], 2);

        let worker = TestWorker::start(&api, "w1");
        let job = wait_state(&api, id, "done", Duration::from_secs(120)).await;
        assert_eq!(job["progress"]["tiles_done"], job["progress"]["tiles"], "{job}");
        assert_eq!(job["progress"]["frames_done"], 2, "{job}");
        assert_eq!(job["progress"]["fraction"], 1.0, "{job}");
        assert!(job["progress"]["eta_s"].is_null(), "{job}");
        assert!(job["finished_ms"].is_u64(), "{job}");

        let listing = get_json(app, &format!("/api/v1/jobs/{id}/frames"), &api.read).await;
        assert_eq!(listing["stem"], "turntable");
        let frames = listing["frames"].as_array().unwrap();
        assert_eq!(frames.iter().map(|f| f["frame"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 2], "{listing}");
        for f in frames {
            let n = f["frame"].as_i64().unwrap();
            let files = f["files"].as_object().unwrap();
            assert_eq!(files.keys().collect::<Vec<_>>(), ["png"], "{listing}");
            let png = &files["png"];
            assert_eq!(png["url"], format!("/api/v1/jobs/{id}/frames/{n}.png"));
            let r = call(app, Method::GET, png["url"].as_str().unwrap(), Some(&api.read)).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], "image/png");
            let etag = r.headers()[header::ETAG].to_str().unwrap().to_string();
            assert!(r.headers()[header::CONTENT_DISPOSITION]
                .to_str()
                .unwrap()
                .contains(&format!("turntable-{n:04}.png")));
            let body = bytes(r).await;
            assert!(body.starts_with(b"\x89PNG\r\n\x1a\n"));
            assert_eq!(body.len() as u64, png["bytes"].as_u64().unwrap());
            let hash = blake3::hash(&body).to_hex().to_string();
            assert_eq!(png["blake3"], hash.as_str());
            assert_eq!(etag, format!("\"{hash}\""));
            // Conditional GET.
            let mut r = request(Method::GET, png["url"].as_str().unwrap(), Some(&api.read), Body::empty());
            r.headers_mut().insert(header::IF_NONE_MATCH, etag.parse().unwrap());
            let r = send(app, r).await;
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
            assert!(bytes(r).await.is_empty());
            let mut r = request(Method::GET, png["url"].as_str().unwrap(), Some(&api.read), Body::empty());
            r.headers_mut().insert(header::IF_NONE_MATCH, "\"0000\"".parse().unwrap());
            assert_eq!(send(app, r).await.status(), StatusCode::OK);
            // EXR was not asked for.
            let uri = format!("/api/v1/jobs/{id}/frames/{n}.exr");
            expect_error(call(app, Method::GET, &uri, Some(&api.read)).await, StatusCode::NOT_FOUND, &uri).await;
            // The exported file is the same.
            let exported = std::fs::read(api.farm.job_dir(id).join(format!("turntable-{n:04}.png"))).unwrap();
            assert_eq!(exported, body.to_vec());
            // The frame's signed manifest (tests/all/manifest.rs checks what it says).
            let manifest = &f["manifest"];
            assert_eq!(manifest["url"], format!("/api/v1/jobs/{id}/frames/{n}.manifest.json"), "{listing}");
            let r = call(app, Method::GET, manifest["url"].as_str().unwrap(), Some(&api.read)).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
            assert!(r.headers()[header::CONTENT_DISPOSITION]
                .to_str()
                .unwrap()
                .contains(&format!("turntable-{n:04}.manifest.json")));
            let body = bytes(r).await;
            assert_eq!(manifest["blake3"], blake3::hash(&body).to_hex().as_str());
            assert_eq!(manifest["bytes"].as_u64(), Some(body.len() as u64));
            let m: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!((m["job"]["id"].as_u64(), m["frame"].as_i64()), (Some(id), Some(n)));
        }

        // The archive: the two PNGs, by their file names, each followed by
        // the frame's signed manifest.
        for query in ["", "?formats=png", "?formats=png,exr"] {
            let r = call(app, Method::GET, &format!("/api/v1/jobs/{id}/archive{query}"), Some(&api.read)).await;
            assert_eq!(r.status(), StatusCode::OK, "{query}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/zip");
            let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes(r).await.to_vec())).unwrap();
            let mut names = Vec::new();
            for i in 0..zip.len() {
                let mut entry = zip.by_index(i).unwrap();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
                let name = entry.name().unwrap().to_string();
                let n: i64 = name[10..14].parse().unwrap();
                let listed = frames.iter().find(|f| f["frame"] == n).unwrap();
                let file = if name.ends_with(".manifest.json") { &listed["manifest"] } else { &listed["files"]["png"] };
                assert_eq!(file["blake3"], blake3::hash(&data).to_hex().as_str());
                names.push(name);
            }
            assert_eq!(
                names,
                [
                    "turntable-0001.png",
                    "turntable-0001.manifest.json",
                    "turntable-0002.png",
                    "turntable-0002.manifest.json"
                ],
                "{query}"
            );
        }
        // Only EXR, which the job has none of: an empty archive.
        let r = call(app, Method::GET, &format!("/api/v1/jobs/{id}/archive?formats=exr"), Some(&api.read)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(zip::ZipArchive::new(std::io::Cursor::new(bytes(r).await.to_vec())).unwrap().len(), 0);

        // The log says frames were written.
        let log = get_json(app, &format!("/api/v1/jobs/{id}/log"), &api.read).await;
        let messages: Vec<&str> =
            log["entries"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
        assert!(messages.iter().any(|m| m.contains("frame") && m.contains("written")), "{messages:?}");
        for e in log["entries"].as_array().unwrap() {
            assert!(matches!(e["level"].as_str(), Some("info" | "warn" | "error")), "{e}");
        }

        // Metrics count the work.
        let text = String::from_utf8(bytes(call(app, Method::GET, "/metrics", None).await).await.to_vec()).unwrap();
        let tiles = job["progress"]["tiles"].as_u64().unwrap();
        assert!(text.contains(&format!("tessera_tiles_done_total {tiles}")), "{text}");
        assert!(text.contains("tessera_frames_done_total 2"), "{text}");
        assert!(text.contains("tessera_store_leader{store=\"sqlite\"} 1"), "{text}");
        assert!(!text.contains("tessera_store_lease_term"), "SQLite has no lease: {text}");
        // The store's commits: a histogram whose count is the commits made,
        // at least one (every tile is durable), its +Inf bucket all of them.
        let count = |prefix: &str| -> u64 {
            let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix}: {text}"));
            line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
        };
        let commits = count("tessera_store_commit_seconds_count ");
        assert!(commits >= 1 && commits <= tiles, "{commits} commits for {tiles} tiles");
        assert_eq!(count("tessera_store_commit_seconds_bucket{le=\"+Inf\"} "), commits);
        assert!(text.contains("# TYPE tessera_store_commit_seconds histogram"), "{text}");

        // Cancelling a finished job changes nothing; retrying it is a conflict.
        let (status, after) =
            json_of(call(app, Method::POST, &format!("/api/v1/jobs/{id}/cancel"), Some(&api.submit)).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(after["state"], "done", "{after}");
        let r = call(app, Method::POST, &format!("/api/v1/jobs/{id}/retry"), Some(&api.submit)).await;
        let (status, body) = json_of(r).await;
        check_error(status, &body, StatusCode::CONFLICT, "retry of a done job");
        assert_eq!(body["code"], "conflict");
        assert_eq!(get_json(app, &format!("/api/v1/jobs/{id}"), &api.read).await["state"], "done");

        // Delete: gone, with its exported frames.
        assert!(api.farm.job_dir(id).is_dir());
        let r = call(app, Method::DELETE, &format!("/api/v1/jobs/{id}"), Some(&api.admin)).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        expect_error(
            call(app, Method::GET, &format!("/api/v1/jobs/{id}"), Some(&api.read)).await,
            StatusCode::NOT_FOUND,
            "deleted",
        )
        .await;
        expect_error(
            call(app, Method::GET, &format!("/api/v1/jobs/{id}/frames/1.png"), Some(&api.read)).await,
            StatusCode::NOT_FOUND,
            "deleted frame",
        )
        .await;
        assert!(!api.farm.job_dir(id).exists(), "{} is left", api.farm.job_dir(id).display());
        assert!(!api.dir.path().join(format!("coord/frames/job-{id}")).exists());
        worker.stop().await;
    });
}

#[test]
fn malformed_submissions_are_refused_and_store_nothing() {
    runtime().block_on(async {
        let api = api().await;
        let app = &api.app;
        let glb = turntable();
        let scene: Part<'_> = ("scene", Some("turntable.glb"), glb.as_slice());
        let draco: &[u8] = br#"{"asset":{"version":"2.0"},"extensionsRequired":["KHR_draco_mesh_compression"],"extensionsUsed":["KHR_draco_mesh_compression"]}"#;
        let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let cases: Vec<(&str, Vec<Part<'_>>, StatusCode, Option<&str>)> = vec![
            // docs/api.md: settings are "a JSON object"; serde would read a
            // struct from an array too (positionally).
            ("settings an empty array", vec![settings("[]"), scene], StatusCode::BAD_REQUEST, None),
            ("settings an array", vec![settings(r#"["shot", "1-2", 32, 18]"#), scene], StatusCode::BAD_REQUEST, None),
            ("no scene part", vec![settings(SMALL)], StatusCode::BAD_REQUEST, None),
            ("no parts at all", vec![], StatusCode::BAD_REQUEST, None),
            ("settings not JSON", vec![settings("{width: 32"), scene], StatusCode::BAD_REQUEST, None),
            ("settings not an object", vec![settings("[1,2]"), scene], StatusCode::BAD_REQUEST, None),
            ("unknown settings key", vec![settings(r#"{"widht":32}"#), scene], StatusCode::BAD_REQUEST, Some("widht")),
            ("width of the wrong type", vec![settings(r#"{"width":"32"}"#), scene], StatusCode::BAD_REQUEST, None),
            ("negative width", vec![settings(r#"{"width":-32}"#), scene], StatusCode::BAD_REQUEST, None),
            ("an unknown part", vec![("other", None, &b"x"[..]), scene], StatusCode::BAD_REQUEST, Some("other")),
            ("the scene twice", vec![scene, scene], StatusCode::BAD_REQUEST, None),
            ("frames 3-1", vec![settings(r#"{"frames":"3-1","width":32}"#), scene], StatusCode::UNPROCESSABLE_ENTITY, Some("frames")),
            ("frames []", vec![settings(r#"{"frames":[],"width":32}"#), scene], StatusCode::UNPROCESSABLE_ENTITY, Some("frames")),
            ("width 0", vec![settings(r#"{"width":0}"#), scene], StatusCode::UNPROCESSABLE_ENTITY, Some("width")),
            ("height 0", vec![settings(r#"{"height":0}"#), scene], StatusCode::UNPROCESSABLE_ENTITY, Some("height")),
            ("spp 0", vec![settings(r#"{"spp":0,"width":32}"#), scene], StatusCode::UNPROCESSABLE_ENTITY, Some("spp")),
            ("formats gif", vec![settings(r#"{"formats":["gif"],"width":32}"#), scene], StatusCode::UNPROCESSABLE_ENTITY, Some("gif")),
            ("formats []", vec![settings(r#"{"formats":[],"width":32}"#), scene], StatusCode::UNPROCESSABLE_ENTITY, Some("formats")),
            ("view_transform nope", vec![settings(r#"{"view_transform":"nope","width":32}"#), scene], StatusCode::UNPROCESSABLE_ENTITY, Some("view_transform")),
            ("fps 0", vec![settings(r#"{"fps":0,"width":32}"#), scene], StatusCode::UNPROCESSABLE_ENTITY, Some("fps")),
            ("engine cuda", vec![settings(r#"{"engine":"cuda","width":32}"#), scene], StatusCode::UNPROCESSABLE_ENTITY, Some("cpu, gpu or auto")),
            ("empty scene", vec![("scene", Some("empty.glb"), &b""[..])], StatusCode::UNPROCESSABLE_ENTITY, None),
            ("random bytes", vec![("scene", Some("noise.glb"), &random[..])], StatusCode::UNPROCESSABLE_ENTITY, Some("glTF")),
            ("truncated GLB", vec![("scene", Some("cut.glb"), &glb[..100])], StatusCode::UNPROCESSABLE_ENTITY, None),
            ("JSON that is not glTF", vec![("scene", Some("x.gltf"), &b"{\"hello\": 1}"[..])], StatusCode::UNPROCESSABLE_ENTITY, None),
            ("a required Draco extension", vec![("scene", Some("draco.gltf"), draco)], StatusCode::UNPROCESSABLE_ENTITY, Some("KHR_draco_mesh_compression")),
            ("camera NoSuchCamera", vec![settings(r#"{"camera":"NoSuchCamera","width":32,"height":18,"frames":"1"}"#), scene], StatusCode::UNPROCESSABLE_ENTITY, Some("NoSuchCamera")),
        ];
        for (what, parts, want, mention) in cases {
            let msg = expect_error(send(app, submit_request(Some(&api.submit), &parts)).await, want, what).await;
            if let Some(m) = mention {
                assert!(msg.contains(m), "{what}: the error names {m}: {msg}");
            }
        }
        // Not multipart at all.
        let mut r = request(Method::POST, "/api/v1/jobs", Some(&api.submit), Body::from(SMALL));
        r.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let (status, body) = json_of(send(app, r).await).await;
        assert!(status.is_client_error(), "{status}");
        check_error(status, &body, status, "application/json");
        let r = request(Method::POST, "/api/v1/jobs", Some(&api.submit), Body::from(glb.clone()));
        let (status, body) = json_of(send(app, r).await).await;
        assert!(status.is_client_error(), "{status}");
        check_error(status, &body, status, "no Content-Type");
        // Multipart without a boundary.
        let mut r = request(Method::POST, "/api/v1/jobs", Some(&api.submit), Body::from(multipart(BOUNDARY, &[scene])));
        r.headers_mut().insert(header::CONTENT_TYPE, "multipart/form-data".parse().unwrap());
        let (status, body) = json_of(send(app, r).await).await;
        check_error(status, &body, StatusCode::BAD_REQUEST, "no boundary");
        // A body cut in the middle of the scene part.
        let whole = multipart(BOUNDARY, &[scene]);
        let mut r = request(Method::POST, "/api/v1/jobs", Some(&api.submit), Body::from(whole[..whole.len() / 2].to_vec()));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}").parse().unwrap());
        let (status, body) = json_of(send(app, r).await).await;
        check_error(status, &body, StatusCode::BAD_REQUEST, "cut body");

        assert_eq!(get_json(app, "/api/v1/jobs", &api.read).await, json!({"jobs": []}));
        assert!(lock(api.farm.store()).jobs().unwrap().is_empty());
        assert!(api.farm.status().await.unwrap().jobs.is_empty());
    });
}

/// A 513 MiB scene, streamed in 1 MiB chunks (nothing that large is held
/// by the test): 413, no job.
#[test]
fn an_upload_over_the_limit_is_413() {
    static CHUNK: [u8; 1 << 20] = [0; 1 << 20];
    runtime().block_on(async {
        let api = api().await;
        let head = Bytes::from(format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"scene\"; filename=\"big.glb\"\r\n\r\nglTF"
        ));
        let tail = Bytes::from(format!("\r\n--{BOUNDARY}--\r\n"));
        let chunks = (tessera_coordinator::http::MAX_UPLOAD >> 20) + 1;
        let parts = std::iter::once(head)
            .chain(std::iter::repeat_n(Bytes::from_static(&CHUNK), chunks))
            .chain(std::iter::once(tail))
            .map(Ok::<_, std::io::Error>);
        let mut r = request(
            Method::POST,
            "/api/v1/jobs",
            Some(&api.submit),
            Body::from_stream(futures_util::stream::iter(parts)),
        );
        r.headers_mut()
            .insert(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}").parse().unwrap());
        let started = Instant::now();
        let (status, body) = json_of(send(&api.app, r).await).await;
        check_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "513 MiB");
        assert_eq!(body["code"], "payload_too_large");
        eprintln!("413 after {:?}", started.elapsed());
        assert_eq!(get_json(&api.app, "/api/v1/jobs", &api.read).await, json!({"jobs": []}));
    });
}

// ---- 3. events ----

#[test]
fn event_streams_carry_tiles_frames_and_job_states() {
    runtime().block_on(async {
        let api = api().await;
        let app = &api.app;
        // Subscribed before anything happens.
        let r = call(app, Method::GET, "/api/v1/events", Some(&api.read)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/event-stream"));
        let mut farm_events = Sse::new(r);

        let id = submit_turntable(&api, SMALL).await["id"].as_u64().unwrap();
        let r = call(app, Method::GET, &format!("/api/v1/jobs/{id}/events"), Some(&api.read)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let mut job_events = Sse::new(r);
        let (name, first) = job_events.next(Duration::from_secs(5)).await;
        assert_eq!(name, "job", "{first}");
        assert_eq!(first["job"], id);

        let worker = TestWorker::start(&api, "w1");
        // The job's own stream: tiles and frames of this job, then done.
        let job_side = tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let (name, data) = job_events.next(Duration::from_secs(120)).await;
                if name != "lagged" {
                    assert_eq!(data["job"], id, "{name}: {data}");
                }
                assert_ne!(name, "worker", "worker events are on the farm stream only");
                let done = name == "job" && data["state"] == "done";
                seen.push(name);
                if done {
                    return seen;
                }
            }
        });
        let mut names = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !(names.contains("tile") && names.contains("frame") && names.contains("worker")) {
            assert!(Instant::now() < deadline, "saw only {names:?}");
            let (name, data) = farm_events.next(Duration::from_secs(120)).await;
            match name.as_str() {
                "tile" => {
                    assert_eq!(data["job"], id);
                    assert!(data["frame"].is_i64() && data["tile"].is_u64() && data["worker"].is_string(), "{data}");
                }
                "frame" => {
                    assert_eq!(data["job"], id);
                    assert!(matches!(data["frame"].as_i64(), Some(1 | 2)), "{data}");
                }
                "worker" => {
                    assert_eq!(data["state"], "joined", "{data}");
                    assert_eq!(data["name"], "w1");
                    assert_eq!(data["identity"].as_str().map(str::len), Some(64), "{data}");
                }
                _ => {}
            }
            names.insert(name);
        }
        let seen = tokio::time::timeout(Duration::from_secs(120), job_side).await.unwrap().unwrap();
        assert!(seen.iter().any(|n| n == "tile") && seen.iter().any(|n| n == "frame"), "{seen:?}");
        worker.stop().await;
        // The farm stream tells the worker left.
        loop {
            let (name, data) = farm_events.next(Duration::from_secs(20)).await;
            if name == "worker" && data["state"] == "left" {
                break;
            }
        }
    });
}

// ---- 4. workers ----

#[test]
fn workers_show_their_state_and_capabilities() {
    runtime().block_on(async {
        let api = api().await;
        let worker = TestWorker::start(&api, "w1");
        let deadline = Instant::now() + Duration::from_secs(30);
        let w = loop {
            let list = get_json(&api.app, "/api/v1/workers", &api.read).await;
            // The store knows a worker a moment before the core counts it
            // connected (offline until then).
            if let Some(w) = list["workers"].as_array().unwrap().first().filter(|w| w["state"] != "offline") {
                break w.clone();
            }
            assert!(Instant::now() < deadline, "the worker never showed: {list}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(matches!(w["state"].as_str(), Some("idle" | "busy")), "{w}");
        assert_eq!(w["name"], "w1");
        assert_eq!(w["identity"].as_str().unwrap().len(), 64, "{w}");
        let caps = &w["capabilities"];
        assert_eq!(caps["slots"], 1, "{w}");
        assert!(caps["cores"].as_u64().unwrap() >= 1, "{w}");
        assert!(caps["agent"].is_string() && caps["memory_bytes"].is_u64(), "{w}");
        assert_eq!(w["leases"], 0);
        // A new worker: middling reputation, no credit yet, not trusted.
        assert_eq!((w["reputation"].as_f64(), w["credit"].as_f64()), (Some(0.5), Some(0.0)), "{w}");
        assert_eq!(w["trust_level"], "new", "{w}");
        let health = get_json(&api.app, "/api/v1/health", &api.read).await;
        assert_eq!(health["workers"], 1);
        let summary = get_json(&api.app, "/api/v1/status", &api.read).await;
        assert_eq!((summary["workers"].as_u64(), summary["slots"].as_u64()), (Some(1), Some(1)), "{summary}");

        worker.stop().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = get_json(&api.app, "/api/v1/workers", &api.read).await;
            let ws = list["workers"].as_array().unwrap();
            assert_eq!(ws.len(), 1, "{list}");
            if ws[0]["state"] == "offline" {
                assert_eq!(ws[0]["identity"], w["identity"]);
                assert_eq!(ws[0]["capabilities"], w["capabilities"], "capabilities are remembered");
                break;
            }
            assert!(Instant::now() < deadline, "the worker never went offline: {list}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(get_json(&api.app, "/api/v1/status", &api.read).await["workers"], 0);
    });
}

// ---- 5. the OpenAPI document against the live router ----

/// The `/api/v1` routes of docs/api.md. (`/metrics` and
/// `/api/openapi.json` are in the docs' table but served outside the
/// document.)
const DOCUMENTED: &[(&str, &str)] = &[
    ("get", "/api/v1/health"),
    ("get", "/api/v1/status"),
    ("post", "/api/v1/jobs"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{id}"),
    ("post", "/api/v1/jobs/{id}/cancel"),
    ("post", "/api/v1/jobs/{id}/retry"),
    ("delete", "/api/v1/jobs/{id}"),
    ("get", "/api/v1/jobs/{id}/frames"),
    ("get", "/api/v1/jobs/{id}/frames/{file}"),
    ("get", "/api/v1/jobs/{id}/archive"),
    ("get", "/api/v1/jobs/{id}/log"),
    ("get", "/api/v1/jobs/{id}/events"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/workers"),
    ("get", "/api/v1/jobs/{id}/tiles"),
    ("get", "/api/v1/jobs/{id}/tiles/{tile}"),
    ("get", "/api/v1/jobs/{id}/tiles/{tile}/preview.png"),
    ("post", "/api/v1/scenes/inspect"),
    ("post", "/api/v1/links"),
];

#[test]
fn the_openapi_document_matches_the_routes() {
    runtime().block_on(async {
        let api = api().await;
        let app = &api.app;
        let (status, doc) = json_of(call(app, Method::GET, "/api/openapi.json", None).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object(), "the bearer scheme is described");
        let paths = doc["paths"].as_object().expect("paths");
        for (method, path) in DOCUMENTED {
            assert!(paths.get(*path).and_then(|p| p.get(*method)).is_some(), "{method} {path} is not in the document");
        }
        // The document is the same as the library's.
        assert_eq!(doc, serde_json::to_value(tessera_coordinator::api::openapi()).unwrap());

        let id = submit_turntable(&api, SMALL).await["id"].as_u64().unwrap();
        let mut checked = 0;
        for (path, item) in paths {
            for method in ["get", "post", "put", "delete", "patch", "head", "options"] {
                if item.get(method).is_none() {
                    continue;
                }
                let job = if method == "delete" { "999999".to_string() } else { id.to_string() };
                let uri = path
                    .replace("{id}", &job)
                    .replace("{file}", "1.png")
                    .replace("{tile}", "0")
                    .replace("{identity}", &"0".repeat(64));
                assert!(!uri.contains('{'), "an unknown path parameter in {path}");
                let mut r = request(method.to_uppercase().parse().unwrap(), &uri, Some(&api.admin), Body::empty());
                if method == "post" && path == "/api/v1/jobs" {
                    r = submit_request(Some(&api.admin), &[]);
                }
                let r = send(app, r).await;
                let status = r.status();
                let what = format!("{method} {uri}");
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
                assert!(!status.is_server_error(), "{what}: {status}");
                if status == StatusCode::NOT_FOUND {
                    let msg = expect_error(r, StatusCode::NOT_FOUND, &what).await;
                    assert!(!msg.contains("no such route"), "{what} is documented but not routed: {msg}");
                }
                checked += 1;
            }
        }
        assert!(checked >= DOCUMENTED.len(), "only {checked} operations in the document");
    });
}

// ---- 5b. what the web page uses: tiles, previews, scene inspection, links ----

async fn inspect(api: &Api, parts: &[Part<'_>]) -> (StatusCode, Value) {
    let mut r = submit_request(Some(&api.submit), parts);
    *r.uri_mut() = "/api/v1/scenes/inspect".parse().unwrap();
    json_of(send(&api.app, r).await).await
}

#[test]
fn tiles_previews_scene_inspection_and_download_links() {
    runtime().block_on(async {
        let api = api().await;
        let app = &api.app;

        // Inspect: what a submission form pre-fills, read in the sandbox.
        let glb = turntable();
        let (status, info) = inspect(&api, &[("scene", Some("turntable.glb"), &glb)]).await;
        assert_eq!(status, StatusCode::OK, "{info}");
        assert_eq!(info["name"], "turntable.glb");
        assert_eq!(info["cameras"], json!(["Camera", "Closeup"]), "{info}");
        assert!(info["frame_end"].as_i64() > info["frame_start"].as_i64(), "{info}");
        assert!(info["width"].as_u64() > Some(0) && info["height"].as_u64() > Some(0), "{info}");
        assert_eq!(info["defaults"]["view_transform"], "agx");
        assert_eq!(info["bytes"], glb.len());
        assert_eq!(info["warnings"], json!([]), "{info}");
        // A .gltf with its buffer as a separate file: the same scene.
        let (gltf, bin) = turntable_separate();
        let (status, separate) =
            inspect(&api, &[("scene", Some("turntable.gltf"), &gltf), ("resource", Some("turntable.bin"), &bin)]).await;
        assert_eq!(status, StatusCode::OK, "{separate}");
        for key in ["frame_start", "frame_end", "width", "height", "cameras"] {
            assert_eq!(separate[key], info[key], "{key}");
        }
        // An extension the renderer ignores is named before anything renders.
        let mut doc: Value = serde_json::from_slice(&gltf).unwrap();
        doc["extensionsUsed"] = json!(["KHR_materials_sheen"]);
        let sheen = serde_json::to_vec(&doc).unwrap();
        let (status, warned) =
            inspect(&api, &[("scene", Some("turntable.gltf"), &sheen), ("resource", Some("turntable.bin"), &bin)])
                .await;
        assert_eq!(status, StatusCode::OK, "{warned}");
        let warnings = warned["warnings"].as_array().unwrap();
        assert!(warnings.len() == 1 && warnings[0].as_str().unwrap().contains("KHR_materials_sheen"), "{warned}");
        // Without its buffer, or with the buffer twice: clear errors.
        let (status, body) = inspect(&api, &[("scene", Some("turntable.gltf"), &gltf)]).await;
        let msg = check_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "missing buffer");
        assert!(msg.contains("turntable.bin"), "{msg}");
        let (status, body) = inspect(
            &api,
            &[
                ("scene", Some("turntable.gltf"), &gltf),
                ("resource", Some("turntable.bin"), &bin),
                ("resource", Some("turntable.bin"), &bin),
            ],
        )
        .await;
        check_error(status, &body, StatusCode::BAD_REQUEST, "a resource twice");
        let (status, body) = inspect(&api, &[("scene", Some("noise.glb"), &b"not a scene at all"[..])]).await;
        check_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "noise");
        // A resource that climbs out of the scene's directory is refused.
        let mut doc: Value = serde_json::from_slice(&gltf).unwrap();
        doc["buffers"][0]["uri"] = json!("../secret.bin");
        let climbing = serde_json::to_vec(&doc).unwrap();
        let (status, body) =
            inspect(&api, &[("scene", Some("turntable.gltf"), &climbing), ("resource", Some("secret.bin"), &bin)])
                .await;
        let msg = check_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "climbing uri");
        assert!(msg.contains("climbs out"), "{msg}");

        // Submit the separate .gltf: who submitted it is recorded.
        let r = send(
            app,
            submit_request(
                Some(&api.submit),
                &[
                    ("settings", None, SMALL.as_bytes()),
                    ("scene", Some("turntable.gltf"), &gltf),
                    ("resource", Some("turntable.bin"), &bin),
                ],
            ),
        )
        .await;
        let (status, job) = json_of(r).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        assert_eq!(job["submitted_by"], "submit", "{job}");
        let id = job["id"].as_u64().unwrap();
        let worker = TestWorker::start(&api, "w1");
        let job = wait_state(&api, id, "done", Duration::from_secs(120)).await;
        worker.stop().await;
        let total = job["progress"]["tiles"].as_u64().unwrap();

        // Tiles: every one listed, rectangles tiling each 32×18 frame.
        let all = get_json(app, &format!("/api/v1/jobs/{id}/tiles"), &api.read).await;
        let all = all["tiles"].as_array().unwrap().clone();
        assert_eq!(all.len() as u64, total);
        let one = get_json(app, &format!("/api/v1/jobs/{id}/tiles?frame=1"), &api.read).await;
        let one = one["tiles"].as_array().unwrap().clone();
        assert_eq!(one.len() as u64 * 2, total, "two frames, equal tiles each");
        let mut covered = vec![0u8; 32 * 18];
        for t in &one {
            assert_eq!(t["frame"], 1);
            assert_eq!(t["worker_name"], "w1", "{t}");
            let r = &t["rect"];
            let (x, y, w, h) = (
                r["x"].as_u64().unwrap(),
                r["y"].as_u64().unwrap(),
                r["width"].as_u64().unwrap(),
                r["height"].as_u64().unwrap(),
            );
            for yy in y..y + h {
                for xx in x..x + w {
                    covered[(yy * 32 + xx) as usize] += 1;
                }
            }
        }
        assert!(covered.iter().all(|&c| c == 1), "the tiles of frame 1 cover it exactly once");

        // Each tile's preview is exactly its part of the frame's PNG.
        let png =
            bytes(call(app, Method::GET, &format!("/api/v1/jobs/{id}/frames/1.png"), Some(&api.read)).await).await;
        let frame = image::load_from_memory(&png).unwrap().to_rgb8();
        for t in &one {
            let n = t["tile"].as_u64().unwrap();
            let detail = get_json(app, &format!("/api/v1/jobs/{id}/tiles/{n}"), &api.read).await;
            let proof = &detail["proof"];
            assert_eq!(proof["signature_checked"], true, "{detail}");
            assert_eq!(proof["commitment"].as_str().map(str::len), Some(64), "{detail}");
            assert!(proof["spot_check"]["mismatch"].is_null(), "{detail}");
            assert!(proof["spot_check"]["pixels"].as_u64() > Some(0), "{detail}");
            assert_eq!(detail["samples"], json!({"start": 0, "count": 2}));
            let r = call(app, Method::GET, detail["preview"].as_str().unwrap(), Some(&api.read)).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], "image/png");
            let etag = r.headers()[header::ETAG].to_str().unwrap().to_string();
            assert_eq!(etag, format!("\"{}\"", detail["blake3"].as_str().unwrap()));
            let preview = image::load_from_memory(&bytes(r).await).unwrap().to_rgb8();
            let rect = &t["rect"];
            let (x, y) = (rect["x"].as_u64().unwrap() as u32, rect["y"].as_u64().unwrap() as u32);
            assert_eq!(
                (preview.width() as u64, preview.height() as u64),
                (rect["width"].as_u64().unwrap(), rect["height"].as_u64().unwrap())
            );
            for (px, py, p) in preview.enumerate_pixels() {
                assert_eq!(p, frame.get_pixel(x + px, y + py), "tile {n} pixel {px},{py}");
            }
            let mut r = request(Method::GET, detail["preview"].as_str().unwrap(), Some(&api.read), Body::empty());
            r.headers_mut().insert(header::IF_NONE_MATCH, etag.parse().unwrap());
            assert_eq!(send(app, r).await.status(), StatusCode::NOT_MODIFIED);
        }
        let r = call(app, Method::GET, &format!("/api/v1/jobs/{id}/tiles?frame=x"), Some(&api.read)).await;
        expect_error(r, StatusCode::BAD_REQUEST, "a frame that is not a number").await;
        for bad in [
            format!("/api/v1/jobs/{id}/tiles/{total}"),
            format!("/api/v1/jobs/{id}/tiles/x"),
            "/api/v1/jobs/999/tiles/0".into(),
            "/api/v1/jobs/999/tiles".into(),
            format!("/api/v1/jobs/{id}/tiles/{total}/preview.png"),
        ] {
            let r = call(app, Method::GET, &bad, Some(&api.read)).await;
            expect_error(r, StatusCode::NOT_FOUND, &bad).await;
        }

        // Thumbnails, listed with each frame.
        let listing = get_json(app, &format!("/api/v1/jobs/{id}/frames"), &api.read).await;
        let thumb = listing["frames"][0]["thumbnail"].as_str().unwrap().to_string();
        assert_eq!(thumb, format!("/api/v1/jobs/{id}/frames/1.thumb.png"));
        let r = call(app, Method::GET, &thumb, Some(&api.read)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(bytes(r).await.starts_with(b"\x89PNG"));

        // Download links: one path, no header, until revoked.
        let ask = |token: &str, path: &str| {
            let mut r =
                request(Method::POST, "/api/v1/links", Some(token), Body::from(json!({ "path": path }).to_string()));
            r.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            r
        };
        let (status, link) = json_of(send(app, ask(&api.read, &format!("/api/v1/jobs/{id}/frames/1.png"))).await).await;
        assert_eq!(status, StatusCode::OK, "{link}");
        let url = link["url"].as_str().unwrap().to_string();
        assert!(link["expires_ms"].as_u64() > Some(now_ms()));
        let r = call(app, Method::GET, &url, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(bytes(r).await, png, "the link serves the frame");
        let other = url.replace("/frames/1.png", "/frames/2.png");
        expect_error(call(app, Method::GET, &other, None).await, StatusCode::UNAUTHORIZED, "another path").await;
        let flipped = if url.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{flipped}", &url[..url.len() - 1]);
        expect_error(call(app, Method::GET, &forged, None).await, StatusCode::UNAUTHORIZED, "forged").await;
        let (status, zip_link) = json_of(send(app, ask(&api.read, &format!("/api/v1/jobs/{id}/archive"))).await).await;
        assert_eq!(status, StatusCode::OK);
        let r = call(app, Method::GET, zip_link["url"].as_str().unwrap(), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(bytes(r).await.starts_with(b"PK"));
        for bad in
            ["/api/v1/jobs", "/api/v1/workers", "/etc/passwd", &format!("/api/v1/jobs/{id}/frames/../../workers")]
        {
            let (status, body) = json_of(send(app, ask(&api.read, bad)).await).await;
            check_error(status, &body, StatusCode::BAD_REQUEST, bad);
        }
        let (status, body) = json_of(send(app, ask(&api.submit, &format!("/api/v1/jobs/{id}/archive"))).await).await;
        check_error(status, &body, StatusCode::FORBIDDEN, "a link needs read");
        // Revoking the token that asked kills its links.
        let (rid, revocable) =
            lock(api.farm.store()).create_token_scoped(TokenKind::Api, "r", &[Scope::Read], now_ms()).unwrap();
        let (_, link) = json_of(send(app, ask(&revocable, &format!("/api/v1/jobs/{id}/frames/2.png"))).await).await;
        let url = link["url"].as_str().unwrap().to_string();
        assert_eq!(call(app, Method::GET, &url, None).await.status(), StatusCode::OK);
        assert!(lock(api.farm.store()).revoke_token(rid).unwrap());
        expect_error(call(app, Method::GET, &url, None).await, StatusCode::UNAUTHORIZED, "revoked").await;
    });
}

// ---- 6. random submissions ----

#[derive(Clone, Debug)]
enum SceneBytes {
    Random(Vec<u8>),
    GlbMagic(Vec<u8>),
    JsonPrefix(Vec<u8>),
    MinimalGltf,
    Draco,
    Turntable,
    TruncatedTurntable(usize),
}

#[derive(Clone, Debug)]
enum PartBody {
    Scene(SceneBytes),
    Settings(String),
}

#[derive(Clone, Debug)]
struct FormPart {
    name: String,
    file_name: Option<String>,
    /// Without a Content-Disposition header at all.
    bare: bool,
    body: PartBody,
}

#[derive(Clone, Debug)]
enum ContentType {
    Multipart,
    MultipartQuoted,
    MultipartNoBoundary,
    MultipartOtherBoundary(String),
    MultipartMixed,
    Json,
    Missing,
    Random(String),
}

#[derive(Clone, Debug)]
struct Submission {
    boundary: String,
    parts: Vec<FormPart>,
    content_type: ContentType,
    /// Cut the body at this point (an index into its length + 1).
    cut: Option<prop::sample::Index>,
    trailer: bool,
}

fn json_value() -> impl Strategy<Value = Value> {
    let ints: Vec<i64> =
        vec![0, 1, -1, 2, 18, 32, 64, 65_536, 65_537, 1 << 20, (1 << 20) + 1, u32::MAX as i64, i64::MAX, i64::MIN];
    let floats = vec![0.0f64, 0.5, -0.5, 1e308, -1e308, 1e-300, 24.0, 1000.5, 4e9];
    let strings = vec![
        "NaN",
        "Infinity",
        "-Infinity",
        "nan",
        "1-2",
        "3-1",
        "1,5,9-12",
        "1-100000000",
        "png",
        "exr",
        "gif",
        "agx",
        "filmic",
        "standard",
        "nope",
        "",
        "-1",
        "1e999",
        "Camera",
        "Closeup",
        "NoSuchCamera",
        "\u{0}",
        "🎬",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop::sample::select(ints).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-100_000i64..100_000).prop_map(Value::from),
        prop::sample::select(floats).prop_map(Value::from),
        prop::sample::select(strings).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn settings_text() -> impl Strategy<Value = String> {
    let keys = vec![
        "name",
        "frames",
        "width",
        "height",
        "spp",
        "tile_size",
        "target_tile_ms",
        "seed",
        "fps",
        "camera",
        "background",
        "background_strength",
        "bounces",
        "shading",
        "view_transform",
        "exposure",
        "formats",
        "priority",
        "engine",
        "denoise",
        "progressive",
        "widht",
        "",
        "FRAMES",
        "extra",
    ];
    let raw = vec![
        "",
        " ",
        "{",
        "}",
        "null",
        "[]",
        "{}",
        "\"x\"",
        r#"{"width": NaN}"#,
        r#"{"spp": 1e999}"#,
        r#"{"width": 32,}"#,
        r#"{"width": 32, "width": 64}"#,
        r#"{"frames": "1-2", "width": 32, "height": 18, "spp": 1, "formats": ["png"]}"#,
    ];
    prop_oneof![
        4 => plausible_settings(),
        6 => prop::collection::btree_map(prop::sample::select(keys), json_value(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()).to_string()),
        2 => prop::sample::select(raw).prop_map(str::to_string),
        1 => "[ -~]{0,40}",
    ]
}

/// Settings whose values are mostly of the right type and often in range.
fn plausible_settings() -> impl Strategy<Value = String> {
    let value_for = |key: &'static str| -> BoxedStrategy<Value> {
        let v = |vs: Vec<Value>| prop::sample::select(vs).boxed();
        match key {
            "frames" => v(vec![
                json!("1"),
                json!("1-2"),
                json!("2,1"),
                json!("3-1"),
                json!([1, 2]),
                json!([2, 2]),
                json!([]),
                json!("0-100000"),
                json!("x"),
            ]),
            "width" | "height" => {
                v(vec![json!(1), json!(8), json!(32), json!(18), json!(0), json!(65_536), json!(65_537), json!(-1)])
            }
            "spp" => v(vec![json!(1), json!(2), json!(0), json!(1 << 20), json!((1 << 20) + 1)]),
            "tile_size" => v(vec![json!(1), json!(8), json!(16), json!(0), json!(4096), json!(4097)]),
            "target_tile_ms" => v(vec![json!(10), json!(9), json!(2000), json!(600_000), json!(600_001)]),
            "fps" => v(vec![json!(24.0), json!(0.0), json!(-1.0), json!(1000.0), json!(1000.5), json!(1e308)]),
            "camera" => v(vec![json!("Camera"), json!("Closeup"), json!("NoSuchCamera"), json!("")]),
            "background" => v(vec![json!([0.1, 0.2, 0.3]), json!([0, 0]), json!([-1, 0, 0]), json!([1e30, 0, 0])]),
            "background_strength" | "exposure" => v(vec![json!(0.0), json!(1.0), json!(-40.0), json!(1e30)]),
            "bounces" => v(vec![json!(0), json!(8), json!(1024), json!(1025)]),
            "shading" => {
                v(vec![json!("auto"), json!("blender3"), json!("gltf"), json!("GLTF"), json!("nope"), json!(1)])
            }
            "view_transform" => v(vec![json!("agx"), json!("filmic"), json!("standard"), json!("AGX"), json!("nope")]),
            "engine" => v(vec![json!("cpu"), json!("auto"), json!("GPU"), json!("cuda"), json!(3)]),
            "denoise" | "progressive" => v(vec![json!(true), json!(false), json!(1), json!("yes"), json!(null)]),
            "formats" => v(vec![
                json!(["png"]),
                json!(["exr"]),
                json!(["png", "exr", "png"]),
                json!([]),
                json!(["gif"]),
                json!(["PNG"]),
            ]),
            "priority" | "seed" => v(vec![json!(0), json!(-5), json!(7), json!(i64::MAX)]),
            _ => v(vec![json!("shot010"), json!(""), json!("\u{7}bell"), json!("x".repeat(300))]),
        }
    };
    let keys = vec![
        "name",
        "frames",
        "width",
        "height",
        "spp",
        "tile_size",
        "target_tile_ms",
        "seed",
        "fps",
        "camera",
        "background",
        "background_strength",
        "bounces",
        "shading",
        "view_transform",
        "exposure",
        "formats",
        "priority",
        "engine",
        "denoise",
        "progressive",
    ];
    prop::sample::subsequence(keys, 0..6)
        .prop_flat_map(move |keys| {
            let values: Vec<BoxedStrategy<Value>> = keys.iter().map(|k| value_for(k)).collect();
            (Just(keys), values)
        })
        .prop_map(|(keys, values)| {
            let mut m = serde_json::Map::new();
            for (k, v) in keys.into_iter().zip(values) {
                m.insert(k.to_string(), v);
            }
            // Small renders by default, so an accepted job stays cheap.
            m.entry("width").or_insert(json!(32));
            m.entry("height").or_insert(json!(18));
            Value::Object(m).to_string()
        })
}

fn scene_bytes() -> impl Strategy<Value = SceneBytes> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(SceneBytes::Random),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(SceneBytes::GlbMagic),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(SceneBytes::JsonPrefix),
        1 => Just(SceneBytes::MinimalGltf),
        1 => Just(SceneBytes::Draco),
        6 => Just(SceneBytes::Turntable),
        1 => (0usize..77_404).prop_map(SceneBytes::TruncatedTurntable),
    ]
}

fn part() -> impl Strategy<Value = FormPart> {
    let file = || prop::option::of("[a-z]{0,8}\\.(glb|gltf)");
    let scene = (file(), scene_bytes()).prop_map(|(file_name, s)| FormPart {
        name: "scene".into(),
        file_name,
        bare: false,
        body: PartBody::Scene(s),
    });
    let settings = settings_text().prop_map(|t| FormPart {
        name: "settings".into(),
        file_name: None,
        bare: false,
        body: PartBody::Settings(t),
    });
    let anything = (
        prop::sample::select(vec!["scene", "settings", "other", "", "Scene"]),
        file(),
        prop::bool::weighted(0.1),
        prop_oneof![scene_bytes().prop_map(PartBody::Scene), settings_text().prop_map(PartBody::Settings)],
    )
        .prop_map(|(name, file_name, bare, body)| FormPart { name: name.to_string(), file_name, bare, body });
    prop_oneof![3 => scene, 3 => settings, 2 => anything]
}

/// Mostly a form as a client sends it (optional settings, then or before
/// the scene), sometimes any parts in any order.
fn parts() -> impl Strategy<Value = Vec<FormPart>> {
    let scene = (prop::option::of("[a-z]{0,8}\\.(glb|gltf)"), scene_bytes()).prop_map(|(file_name, s)| FormPart {
        name: "scene".into(),
        file_name,
        bare: false,
        body: PartBody::Scene(s),
    });
    let settings = settings_text().prop_map(|t| FormPart {
        name: "settings".into(),
        file_name: None,
        bare: false,
        body: PartBody::Settings(t),
    });
    prop_oneof![
        3 => (prop::option::of(settings), scene, any::<bool>()).prop_map(|(settings, scene, settings_last)| {
            let mut parts = vec![scene];
            if let Some(s) = settings {
                if settings_last {
                    parts.push(s);
                } else {
                    parts.insert(0, s);
                }
            }
            parts
        }),
        1 => prop::collection::vec(part(), 0..4),
    ]
}

fn submission() -> impl Strategy<Value = Submission> {
    let content_type = prop_oneof![
        12 => Just(ContentType::Multipart),
        2 => Just(ContentType::MultipartQuoted),
        1 => Just(ContentType::MultipartNoBoundary),
        1 => "[a-zA-Z0-9]{1,20}".prop_map(ContentType::MultipartOtherBoundary),
        1 => Just(ContentType::MultipartMixed),
        1 => Just(ContentType::Json),
        1 => Just(ContentType::Missing),
        1 => "[ -~]{0,40}".prop_map(ContentType::Random),
    ];
    let boundary = prop_oneof![
        6 => "[A-Za-z0-9_-]{1,70}",
        // Characters RFC 2046 allows only in a quoted boundary.
        1 => "[A-Za-z0-9'()+_,./:=? -]{1,70}",
    ];
    (
        boundary,
        parts(),
        content_type,
        prop::option::weighted(0.15, any::<prop::sample::Index>()),
        prop::bool::weighted(0.95),
    )
        .prop_map(|(boundary, parts, content_type, cut, trailer)| Submission {
            boundary,
            parts,
            content_type,
            cut,
            trailer,
        })
}

fn scene_of(s: &SceneBytes, glb: &[u8]) -> Vec<u8> {
    match s {
        SceneBytes::Random(b) => b.clone(),
        SceneBytes::GlbMagic(b) => [b"glTF".as_slice(), b].concat(),
        SceneBytes::JsonPrefix(b) => [b"{".as_slice(), b].concat(),
        SceneBytes::MinimalGltf => br#"{"asset":{"version":"2.0"}}"#.to_vec(),
        SceneBytes::Draco => {
            br#"{"asset":{"version":"2.0"},"extensionsRequired":["KHR_draco_mesh_compression"]}"#.to_vec()
        }
        SceneBytes::Turntable => glb.to_vec(),
        SceneBytes::TruncatedTurntable(n) => glb[..*n].to_vec(),
    }
}

fn build(s: &Submission, glb: &[u8]) -> (Option<String>, Vec<u8>) {
    let b = &s.boundary;
    let mut body = Vec::new();
    for p in &s.parts {
        body.extend_from_slice(format!("--{b}\r\n").as_bytes());
        if !p.bare {
            body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{}\"", p.name).as_bytes());
            if let Some(f) = &p.file_name {
                body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
            }
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"\r\n");
        match &p.body {
            PartBody::Scene(scene) => body.extend_from_slice(&scene_of(scene, glb)),
            PartBody::Settings(text) => body.extend_from_slice(text.as_bytes()),
        }
        body.extend_from_slice(b"\r\n");
    }
    if s.trailer {
        body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    }
    if let Some(cut) = &s.cut {
        body.truncate(cut.index(body.len() + 1));
    }
    let content_type = match &s.content_type {
        ContentType::Multipart => Some(format!("multipart/form-data; boundary={b}")),
        ContentType::MultipartQuoted => Some(format!("multipart/form-data; boundary=\"{b}\"")),
        ContentType::MultipartNoBoundary => Some("multipart/form-data".into()),
        ContentType::MultipartOtherBoundary(o) => Some(format!("multipart/form-data; boundary={o}")),
        ContentType::MultipartMixed => Some(format!("multipart/mixed; boundary={b}")),
        ContentType::Json => Some("application/json".into()),
        ContentType::Missing => None,
        ContentType::Random(r) => Some(r.clone()),
    };
    (content_type, body)
}

#[test]
fn random_submissions_never_break_the_server() {
    let rt = runtime();
    let api = rt.block_on(api());
    let glb = turntable();
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        rng_algorithm: prop::test_runner::RngAlgorithm::ChaCha,
        rng_seed: prop::test_runner::RngSeed::Fixed(0x7e55e7a),
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    };
    let created = std::sync::atomic::AtomicUsize::new(0);
    proptest!(config, |(s in submission())| {
        let (content_type, body) = build(&s, &glb);
        let mut r = request(Method::POST, "/api/v1/jobs", Some(&api.submit), Body::from(body));
        if let Some(ct) = content_type {
            if let Ok(v) = ct.parse() {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
        }
        let (status, body) = rt.block_on(async {
            let r = send(&api.app, r).await;
            let status = r.status();
            (status, bytes(r).await)
        });
        prop_assert!(!status.is_server_error(), "{status}: {}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| TestCaseError::fail(format!("{status}: not JSON ({e}): {:?}", String::from_utf8_lossy(&body))))?;
        if status.is_client_error() {
            prop_assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{status}: {v}");
            prop_assert!(v["code"].is_string(), "{status}: {v}");
        } else {
            prop_assert_eq!(status, StatusCode::CREATED, "{}", v);
            prop_assert!(v["id"].is_u64(), "{}", v);
            created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // Every 201 is a job, and nothing else is.
    let jobs = rt.block_on(get_json(&api.app, "/api/v1/jobs?limit=10000", &api.read));
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), created.load(std::sync::atomic::Ordering::Relaxed));
    eprintln!("{} of the random submissions were accepted", created.into_inner());
}
