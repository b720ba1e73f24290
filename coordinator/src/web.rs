//! The artists' web page (`web/`): static HTML, CSS and JS modules compiled
//! into the binary, so a coordinator serves its page with nothing to
//! install or build (no Node.js). The page is an API client like any other:
//! it signs in with an API token and uses `/api/v1` only (docs/web.md).
//!
//! Every file is served with a strict Content-Security-Policy (scripts and
//! styles from this origin only; connections to it and, on a farm of
//! several coordinators, to theirs; images also from `blob:` URLs the page
//! makes from API responses), `nosniff`, no referrer, and an
//! `ETag` of its blake3, revalidated on each load so an upgraded
//! coordinator never serves a stale script.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::api::etag::Etag;
use crate::farm::database::Peers;

/// One embedded file.
pub struct Asset {
    /// Its path under `web/`, as served under `/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:literal) => {
        Asset { path: $path, content_type: $type, bytes: include_bytes!(concat!("../../web/", $path)) }
    };
}

/// Everything under `web/` that the page needs (a unit test checks that
/// no file there is missing from this list).
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/app.js", "text/javascript; charset=utf-8"),
    asset!("js/api.js", "text/javascript; charset=utf-8"),
    asset!("js/views.js", "text/javascript; charset=utf-8"),
    asset!("js/job.js", "text/javascript; charset=utf-8"),
    asset!("js/submit.js", "text/javascript; charset=utf-8"),
    asset!("js/ui.js", "text/javascript; charset=utf-8"),
];

/// The policy, with the sources the page may connect to in the middle
/// (`'self'`, and on a farm of several coordinators their origins too).
const CSP_HEAD: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src";
const CSP_TAIL: &str =
    "; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page's routes: `/` and each asset by its path. With `peers` (a farm
/// of several coordinators) the page may also connect to the others, so it
/// keeps following a job when this coordinator dies (`web/js/api.js`).
pub fn routes<S: Clone + Send + Sync + 'static>(peers: Option<Peers>) -> Router<S> {
    let index = peers.clone();
    let mut router = Router::new()
        .route("/", get(move |headers: HeaderMap| async move { serve(&ASSETS[0], &headers, index.as_ref()) }));
    for asset in ASSETS {
        let peers = peers.clone();
        router = router.route(
            &format!("/{}", asset.path),
            get(move |headers: HeaderMap| async move { serve(asset, &headers, peers.as_ref()) }),
        );
    }
    router
}

/// The Content-Security-Policy: connections to this origin and the
/// farm's other coordinators' (those whose announced address is a plain
/// `http(s)://host:port` a policy can name), nothing else.
fn policy(peers: Option<&Peers>) -> String {
    let mut connect = String::from(" 'self'");
    if let Some(peers) = peers {
        for origin in peers.view().origins {
            let plain = origin.starts_with("http://") || origin.starts_with("https://");
            if plain && origin.bytes().all(|b| b.is_ascii_alphanumeric() || b".:/-_[]".contains(&b)) {
                connect.push(' ');
                connect.push_str(&origin);
            }
        }
    }
    format!("{CSP_HEAD}{connect}{CSP_TAIL}")
}

fn serve(asset: &Asset, headers: &HeaderMap, peers: Option<&Peers>) -> Response {
    let etag = Etag::of_hex(&blake3::hash(asset.bytes).to_hex()[..32]);
    let mut response =
        if etag.matches(headers) { StatusCode::NOT_MODIFIED.into_response() } else { asset.bytes.into_response() };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(csp) = HeaderValue::from_str(&policy(peers)) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    etag.set(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under web/ (but its README) is embedded and served.
    #[test]
    fn every_web_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
        let mut stack = vec![root.clone()];
        let mut files = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
                    if rel != "README.md" {
                        files.push(rel);
                    }
                }
            }
        }
        files.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        embedded.sort();
        assert_eq!(files, embedded, "web/ and web::ASSETS disagree");
    }
}
