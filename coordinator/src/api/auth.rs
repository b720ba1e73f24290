//! Bearer API tokens and their scopes (docs/api.md): no token or an
//! unknown one is 401, a token without the route's scope is 403.
//!
//! Download links: a browser's plain download (a link the user clicks, a
//! ZIP streamed to disk) cannot carry an `Authorization` header, so a
//! token with `read` may ask for a link to one file path
//! (`POST /api/v1/links`). The link carries the token's id, an expiry and
//! a keyed blake3 MAC of both and the path, under a key this process drew
//! at start (links die with a restart); it opens that path only, until it
//! expires, and only while the token is not revoked. The token's secret is
//! never in a URL.
//!
//! Valid tokens are remembered for [`TOKEN_TTL`] ([`TokenCache`]), so a
//! token revoked with `tessera token revoke` (which writes the store, not
//! this process) stops working within that time rather than at once.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};

use super::error::ApiError;
use super::AppState;
use tessera_store::{grants, Scope, TokenRecord};

/// How long a checked API token is taken on trust without reading the
/// store again.
pub const TOKEN_TTL: Duration = Duration::from_secs(2);

/// Most tokens remembered at once.
const TOKEN_CACHE_MAX: usize = 4096;

/// API tokens recently found valid, by blake3 of the secret. Without it
/// every request reads the store first; on PostgreSQL that is a round trip
/// to the server, a third of the API's queries under the soak. Only valid
/// tokens are kept, so unknown secrets cannot fill it.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<BTreeMap<[u8; 32], (TokenRecord, Instant)>>,
}

impl TokenCache {
    fn get(&self, secret: &str) -> Option<TokenRecord> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&tessera_store::support::secret_hash(secret))
            .filter(|(_, at)| at.elapsed() < TOKEN_TTL)
            .map(|(r, _)| r.clone())
    }

    fn put(&self, secret: &str, record: &TokenRecord) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= TOKEN_CACHE_MAX {
            entries.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
            if entries.len() >= TOKEN_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(tessera_store::support::secret_hash(secret), (record.clone(), Instant::now()));
    }
}

/// How long a download link works.
pub const LINK_LIFETIME_MS: u64 = 5 * 60 * 1000;

fn link_mac(key: &[u8; 32], token: u64, expires_ms: u64, path: &str) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&token.to_le_bytes()).update(&expires_ms.to_le_bytes()).update(path.as_bytes());
    h.finalize()
}

/// The `link` query value that opens `path` for `token` until `expires_ms`.
pub fn sign_link(state: &AppState, token: u64, expires_ms: u64, path: &str) -> Result<String, ApiError> {
    let key = state.link_key.as_ref().ok_or_else(|| ApiError::internal("download links are disabled (no entropy)"))?;
    Ok(format!("{token}.{expires_ms}.{}", link_mac(key, token, expires_ms, path).to_hex()))
}

/// Read access to `path`: a bearer token with `read`, or (without an
/// `Authorization` header) a valid download link for exactly that path.
pub async fn require_read_or_link(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    link: Option<&str>,
) -> Result<(), ApiError> {
    let Some(link) = link.filter(|_| !headers.contains_key(header::AUTHORIZATION)) else {
        return require(state, headers, Scope::Read).await.map(|_| ());
    };
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let mut parts = link.splitn(3, '.');
    let (Some(token), Some(expires), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(unauthorized("malformed download link"));
    };
    let (Ok(token), Ok(expires)) = (token.parse::<u64>(), expires.parse::<u64>()) else {
        return Err(unauthorized("malformed download link"));
    };
    let Ok(mac) = blake3::Hash::from_hex(mac) else { return Err(unauthorized("malformed download link")) };
    let Some(key) = &state.link_key else { return Err(unauthorized("download links are disabled")) };
    // blake3::Hash compares in constant time.
    if mac != link_mac(key, token, expires, path) {
        return Err(unauthorized("this download link is not valid for this path (or the coordinator restarted)"));
    }
    if expires < crate::farm::writer::unix_ms() {
        return Err(unauthorized("this download link has expired: ask for a new one"));
    }
    let store = state.farm.reader().clone();
    let tokens = tokio::task::spawn_blocking(move || crate::farm::lock(&store).tokens()).await??;
    match tokens.into_iter().find(|t| t.id == token) {
        Some(t) if !t.revoked && grants(&t.scopes, Scope::Read) => Ok(()),
        _ => Err(unauthorized("the token behind this download link was revoked")),
    }
}

/// The caller's token, if it grants `needed`.
pub async fn require(state: &AppState, headers: &HeaderMap, needed: Scope) -> Result<TokenRecord, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("an API token is required: Authorization: Bearer ta_…"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer ta_…`"))?
        .to_string();
    let record = match state.tokens.get(&token) {
        Some(record) => record,
        None => {
            let store = state.farm.reader().clone();
            let (record, token) = tokio::task::spawn_blocking(move || {
                let record = crate::farm::lock(&store).api_token(&token);
                (record, token)
            })
            .await?;
            let record = record?.ok_or_else(|| unauthorized("unknown or revoked API token"))?;
            state.tokens.put(&token, &record);
            record
        }
    };
    if !grants(&record.scopes, needed) {
        let has: Vec<&str> = record.scopes.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this token's scopes ({}) do not include {}", has.join(", "), needed.as_str()),
        ));
    }
    Ok(record)
}
