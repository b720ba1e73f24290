//! Strong `ETag`s from content hashes: what a blake3 names never changes,
//! so a client that sends the tag back in `If-None-Match` gets a 304 and
//! keeps its copy.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;

/// A quoted entity tag.
pub struct Etag(String);

impl Etag {
    /// The tag for content named by `hex` (a blake3, or a prefix of one).
    pub fn of_hex(hex: &str) -> Etag {
        Etag(format!("\"{hex}\""))
    }

    /// Whether the request's `If-None-Match` names this tag.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(&self.0))
    }

    /// Sets the response's `ETag`.
    pub fn set(&self, response: &mut Response) {
        if let Ok(v) = HeaderValue::from_str(&self.0) {
            response.headers_mut().insert(header::ETAG, v);
        }
    }
}
