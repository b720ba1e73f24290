//! A small blocking client of the HTTP API (docs/api.md): JSON in and out,
//! the multipart submission, and downloads that never leave a half-written
//! file under the final name.
//!
//! Whatever the server sends is data, not trusted: a non-2xx answer becomes
//! [`ClientError::Status`] carrying its status and `ErrorBody.error`, a body
//! that is not the expected JSON is an error naming the request, and nothing
//! is unwrapped.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use ureq::http::{Response, StatusCode};
use ureq::unversioned::multipart::{Form, Part};
use ureq::Body;

use crate::conn::Conn;
use crate::model::{ErrorBody, Job, SubmitSettings};

/// The most a JSON answer may be (a long job list or log).
const MAX_JSON_BYTES: u64 = 64 << 20;
/// The most of an error body that is read.
const MAX_ERROR_BYTES: u64 = 64 << 10;

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-2xx status.
    #[error("{}", status_line(*status, message))]
    Status { status: u16, message: String },
    /// No server answered at the address.
    #[error(
        "cannot reach a Tessera coordinator at {url} ({detail}): is it running there? \
         Give its address with --url or TESSERA_URL"
    )]
    Unreachable { url: String, detail: String },
    /// The request failed in another way (TLS, a broken connection, ...).
    #[error("{request}: {source}")]
    Http { request: String, source: ureq::Error },
    #[error("{request}: the answer is not the expected JSON (is this a Tessera coordinator?): {source}")]
    NotJson { request: String, source: ureq::Error },
    /// The path is not one on the API: the token must not travel elsewhere.
    #[error("{0:?} is not a path on the coordinator's API")]
    NotApiPath(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// A download whose size or blake3 is not what the listing said;
    /// nothing was written under the destination's name.
    #[error(
        "{url} came back corrupt: {bytes} bytes with blake3 {hash}, the listing says {want_bytes} bytes \
         with blake3 {want_hash}; {dest} was not written"
    )]
    Corrupt { url: String, dest: String, bytes: u64, hash: String, want_bytes: u64, want_hash: String },
    #[error("encoding the request: {0}")]
    Encode(String),
}

fn status_line(status: u16, message: &str) -> String {
    let reason = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let head = if reason.is_empty() { status.to_string() } else { format!("{status} {reason}") };
    if message.is_empty() {
        head
    } else {
        format!("{head}: {message}")
    }
}

type Result<T> = std::result::Result<T, ClientError>;

fn io_err(what: impl fmt::Display) -> impl FnOnce(io::Error) -> ClientError {
    move |source| ClientError::Io { what: what.to_string(), source }
}

/// The API of one farm, as one token: at one address, or at several
/// (`--url http://a:7878,http://b:7878`, a farm of several coordinators on
/// PostgreSQL). With several, a request that finds its coordinator gone
/// (unreachable) or standing by (503) is sent to the next, and the client
/// stays with the one that answered: a job followed through one
/// coordinator keeps being followed through another when the first dies.
pub struct Client {
    agent: ureq::Agent,
    bases: Vec<String>,
    /// Index into `bases` of the coordinator that last answered.
    current: std::sync::atomic::AtomicUsize,
    auth: String,
}

impl Client {
    pub fn new(conn: &Conn) -> Self {
        let config = ureq::Agent::config_builder()
            // Non-2xx answers come back as responses, so their JSON error can be read.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .user_agent(format!("tessera/{}", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            bases: split_bases(&conn.url),
            current: Default::default(),
            auth: format!("Bearer {}", conn.token),
        }
    }

    /// The address the client talks to now (the coordinator that last
    /// answered, of several).
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(std::sync::atomic::Ordering::Relaxed) % self.bases.len()]
    }

    /// Every address the client was given.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    /// The full URL of an API path (`/api/v1/...`) at the current address.
    pub fn url(&self, path: &str) -> Result<String> {
        join_url(self.base(), path)
    }

    /// Runs `request` against the current address and, while it finds the
    /// coordinator there gone or standing by, against each other address
    /// once; the first to answer becomes the current one.
    ///
    /// Only those two outcomes move on: either means the request was not
    /// acted on (a refused connection carried nothing; a standby changes
    /// nothing), so a submission is not made twice.
    fn failover<T>(&self, mut request: impl FnMut(&str) -> Result<T>) -> Result<T> {
        use std::sync::atomic::Ordering::Relaxed;
        let start = self.current.load(Relaxed);
        let n = self.bases.len();
        let mut last = None;
        for i in 0..n {
            let at = (start + i) % n;
            match request(&self.bases[at]) {
                Err(e @ (ClientError::Unreachable { .. } | ClientError::Status { status: 503, .. })) if i + 1 < n => {
                    last = Some(e);
                }
                other => {
                    if other.is_ok() {
                        self.current.store(at, Relaxed);
                    }
                    return other;
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Encode("no coordinator address".into())))
    }

    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.failover(|base| {
            let url = join_url(base, path)?;
            let res = self.agent.get(&url).header("Authorization", &self.auth).call();
            read_json(checked(res, "GET", &url, base)?, "GET", &url)
        })
    }

    /// A POST with an optional JSON body, answered with JSON.
    pub fn post_json<T: DeserializeOwned>(&self, path: &str, body: Option<&serde_json::Value>) -> Result<T> {
        self.failover(|base| {
            let url = join_url(base, path)?;
            let req = self.agent.post(&url).header("Authorization", &self.auth);
            let res = match body {
                Some(b) => req.send_json(b),
                None => req.send_empty(),
            };
            read_json(checked(res, "POST", &url, base)?, "POST", &url)
        })
    }

    pub fn delete(&self, path: &str) -> Result<()> {
        self.failover(|base| {
            let url = join_url(base, path)?;
            let res = self.agent.delete(&url).header("Authorization", &self.auth).call();
            checked(res, "DELETE", &url, base)?;
            Ok(())
        })
    }

    /// `POST /api/v1/jobs`: the scene and its settings as multipart parts
    /// `scene` and `settings`. A file name that cannot travel in the part's
    /// header as it is (quotes, backslashes, control characters) is sent
    /// with those replaced by `_`, and as the job's `name` unless one is set.
    pub fn submit(&self, scene: &[u8], file_name: &str, settings: &SubmitSettings) -> Result<Job> {
        let safe_name = header_safe(file_name);
        let mut settings = settings.clone();
        if safe_name != file_name && settings.name.is_none() {
            settings.name = Some(file_name.to_owned());
        }
        let settings = serde_json::to_string(&settings).map_err(|e| ClientError::Encode(e.to_string()))?;
        let encode = |e: ureq::Error| ClientError::Encode(e.to_string());
        self.failover(|base| {
            let url = join_url(base, "/api/v1/jobs")?;
            let form = Form::new()
                .part(
                    "scene",
                    Part::bytes(scene).file_name(&safe_name).mime_str("application/octet-stream").map_err(encode)?,
                )
                .part("settings", Part::text(&settings).mime_str("application/json").map_err(encode)?);
            let res = self.agent.post(&url).header("Authorization", &self.auth).send(form);
            read_json(checked(res, "POST", &url, base)?, "POST", &url)
        })
    }

    /// Streams a file of the API (`url_path`, e.g. a frame's `url`) to
    /// `dest`: into a temporary file beside it, renamed over `dest` only once
    /// complete and, when `expect` is given, of the expected size and blake3.
    /// `progress` is told the bytes received as they arrive. Returns the
    /// size and blake3 of what was written.
    pub fn download(
        &self,
        url_path: &str,
        dest: &Path,
        expect: Option<(u64, blake3::Hash)>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(u64, blake3::Hash)> {
        let (url, res) = self.failover(|base| {
            let url = join_url(base, url_path)?;
            let res = self.agent.get(&url).header("Authorization", &self.auth).call();
            Ok((url.clone(), checked(res, "GET", &url, base)?))
        })?;
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(dest.file_name().unwrap_or_default());
        prefix.push(".");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".part");
        // Like File::create: 0666 less the umask (tempfile's default is 0600).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let mut tmp = builder.tempfile_in(dir).map_err(io_err(format_args!("creating a file in {}", dir.display())))?;
        let mut reader = res.into_body().into_reader();
        let mut hasher = blake3::Hasher::new();
        let mut bytes = 0u64;
        let mut buf = vec![0u8; 256 << 10];
        {
            let mut out = io::BufWriter::new(tmp.as_file_mut());
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_err(format_args!("reading {url}"))(e)),
                };
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io_err(format_args!("writing {}", dest.display())))?;
                bytes += n as u64;
                progress(n as u64);
            }
            out.flush().map_err(io_err(format_args!("writing {}", dest.display())))?;
        }
        let hash = hasher.finalize();
        if let Some((want_bytes, want_hash)) = expect {
            // `tmp` is removed when dropped: nothing reaches `dest`.
            if bytes != want_bytes || hash != want_hash {
                let dest = dest.display().to_string();
                let (hash, want_hash) = (hash.to_hex().to_string(), want_hash.to_hex().to_string());
                return Err(ClientError::Corrupt { url, dest, bytes, hash, want_bytes, want_hash });
            }
        }
        tmp.as_file().sync_all().map_err(io_err(format_args!("writing {}", dest.display())))?;
        tmp.persist(dest).map_err(|e| io_err(format_args!("writing {}", dest.display()))(e.error))?;
        Ok((bytes, hash))
    }
}

/// The addresses of `url`: one, or several separated by commas; never none
/// (an empty one is kept, and fails as an address would).
fn split_bases(url: &str) -> Vec<String> {
    let bases: Vec<String> =
        url.split(',').map(|b| b.trim().trim_end_matches('/').to_owned()).filter(|b| !b.is_empty()).collect();
    if bases.is_empty() {
        vec![url.to_owned()]
    } else {
        bases
    }
}

/// `base` + `path`, where `path` is an absolute path on the API (as the
/// server's `url` fields are). Anything else (a full URL to another host, a
/// relative path) is refused: the token must not travel elsewhere.
pub fn join_url(base: &str, path: &str) -> Result<String> {
    if !path.starts_with('/')
        || path.starts_with("//")
        || path.contains(['\\', '#'])
        || path.chars().any(char::is_control)
    {
        return Err(ClientError::NotApiPath(path.to_owned()));
    }
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

/// `name` with what would break a quoted multipart header value replaced by `_`.
fn header_safe(name: &str) -> String {
    let safe: String = name.chars().map(|c| if c == '"' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    if safe.is_empty() {
        "scene".to_owned()
    } else {
        safe
    }
}

/// A response whose status is 2xx, or the error it stands for.
fn checked(
    res: std::result::Result<Response<Body>, ureq::Error>,
    method: &str,
    url: &str,
    base: &str,
) -> Result<Response<Body>> {
    let mut res = match res {
        Ok(r) => r,
        Err(e) => {
            if let Some(detail) = unreachable_detail(&e) {
                return Err(ClientError::Unreachable { url: base.to_owned(), detail });
            }
            return Err(ClientError::Http { request: format!("{method} {url}"), source: e });
        }
    };
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    let text =
        res.body_mut().with_config().limit(MAX_ERROR_BYTES).lossy_utf8(true).read_to_string().unwrap_or_default();
    Err(ClientError::Status { status: status.as_u16(), message: error_message(&text) })
}

/// The person-readable part of an error body: `ErrorBody.error`, else the
/// start of whatever text came back (a proxy's page, say).
fn error_message(body: &str) -> String {
    if let Ok(e) = serde_json::from_str::<ErrorBody>(body) {
        return crate::clean(&e.error);
    }
    let text = body.trim();
    let short: String = text.chars().take(200).collect();
    crate::clean(&if short.len() < text.len() { format!("{short}…") } else { short })
}

/// What to say when no server answered, or None if one did.
fn unreachable_detail(e: &ureq::Error) -> Option<String> {
    use io::ErrorKind::*;
    match e {
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | AddrNotAvailable
                    | HostUnreachable
                    | NetworkUnreachable
                    | TimedOut
            ) =>
        {
            Some(io.to_string())
        }
        ureq::Error::ConnectionFailed => Some("connection failed".into()),
        ureq::Error::HostNotFound => Some("host not found".into()),
        ureq::Error::Timeout(t) => Some(format!("timed out: {t}")),
        _ => None,
    }
}

fn read_json<T: DeserializeOwned>(mut res: Response<Body>, method: &str, url: &str) -> Result<T> {
    res.body_mut()
        .with_config()
        .limit(MAX_JSON_BYTES)
        .read_json()
        .map_err(|source| ClientError::NotJson { request: format!("{method} {url}"), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_join_the_base_and_nothing_else_does() {
        assert_eq!(join_url("http://farm:7878", "/api/v1/jobs").unwrap(), "http://farm:7878/api/v1/jobs");
        assert_eq!(
            join_url("https://farm.example/tessera", "/api/v1/jobs/7/frames/12.png").unwrap(),
            "https://farm.example/tessera/api/v1/jobs/7/frames/12.png"
        );
        for bad in ["http://evil/x", "//evil/x", "api/v1/jobs", "", "/a\\b", "/a\nb", "/a#b"] {
            assert!(join_url("http://farm:7878", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_names_are_made_safe_for_the_part_header() {
        assert_eq!(header_safe("shot010.glb"), "shot010.glb");
        assert_eq!(header_safe("my \"best\"\r\nshot\\.glb"), "my _best___shot_.glb");
        assert_eq!(header_safe("café.gltf"), "café.gltf");
        assert_eq!(header_safe(""), "scene");
    }

    #[test]
    fn errors_carry_the_status_and_the_servers_message() {
        let e = ClientError::Status {
            status: 401,
            message: error_message(r#"{"error":"unknown or revoked API token","code":"unauthorized"}"#),
        };
        assert_eq!(e.to_string(), "401 Unauthorized: unknown or revoked API token");
        let e = ClientError::Status { status: 502, message: error_message("<html>\x1b[31mBad gateway</html>\n") };
        assert_eq!(e.to_string(), "502 Bad Gateway: <html>?[31mBad gateway</html>");
        assert_eq!(ClientError::Status { status: 599, message: String::new() }.to_string(), "599");
        let e = ClientError::Unreachable { url: "http://127.0.0.1:1".into(), detail: "refused".into() };
        let s = e.to_string();
        assert!(s.contains("http://127.0.0.1:1") && s.contains("--url") && s.contains("TESSERA_URL"), "{s}");
    }

    #[test]
    fn a_refused_connection_names_the_url_and_the_flag() {
        // A port nobody listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = Client::new(&Conn { url: format!("http://127.0.0.1:{port}"), token: "ta_x".into() });
        let err = client.get_json::<serde_json::Value>("/api/v1/jobs").unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:#}");
        let s = format!("{err:#}");
        assert!(s.contains(&format!("127.0.0.1:{port}")) && s.contains("--url"), "{s}");
    }

    /// A one-shot HTTP server answering every connection with `answer`,
    /// returning what it was sent.
    fn serve_once(answer: &'static [u8]) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the request (headers and any Content-Length body) is in.
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            s.write_all(answer).unwrap();
            got
        });
        (url, handle)
    }

    #[test]
    fn a_401_becomes_its_message_and_the_token_is_sent() {
        let (url, server) = serve_once(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 62\r\nconnection: close\r\n\r\n\
              {\"error\":\"unknown or revoked API token\",\"code\":\"unauthorized\"}",
        );
        let client = Client::new(&Conn { url, token: "ta_secret".into() });
        let err = client.get_json::<serde_json::Value>("/api/v1/jobs/7").unwrap_err();
        assert_eq!(err.to_string(), "401 Unauthorized: unknown or revoked API token");
        let req = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(req.starts_with("GET /api/v1/jobs/7 HTTP/1.1\r\n"), "{req}");
        assert!(req.to_ascii_lowercase().contains("authorization: bearer ta_secret\r\n"), "{req}");
    }

    #[test]
    fn submit_sends_the_scene_and_settings_as_multipart() {
        let (url, server) = serve_once(b"HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: 36\r\n\r\n{\"error\":\"not glTF\",\"code\":\"unproc\"}");
        let client = Client::new(&Conn { url, token: "ta_x".into() });
        let settings = SubmitSettings { spp: Some(4), ..Default::default() };
        let err = client.submit(b"glTF\x02\x00scene", "shot.glb", &settings).unwrap_err();
        assert_eq!(err.to_string(), "422 Unprocessable Entity: not glTF");
        let req = server.join().unwrap();
        let text = String::from_utf8_lossy(&req);
        let lower = text.to_ascii_lowercase();
        assert!(text.starts_with("POST /api/v1/jobs HTTP/1.1\r\n"), "{text}");
        let boundary = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-type: multipart/form-data; boundary="))
            .expect("multipart content type")
            .trim()
            .to_owned();
        assert!(text.contains(
            "Content-Disposition: form-data; name=\"scene\"; filename=\"shot.glb\"\r\nContent-Type: application/octet-stream\r\n\r\nglTF\x02\x00scene\r\n"
        ), "{text}");
        assert!(text.contains("name=\"settings\""), "{text}");
        assert!(text.contains("{\"spp\":4}"), "{text}");
        assert!(lower.trim_end().ends_with(&format!("--{boundary}--")), "{text}");
    }
}
