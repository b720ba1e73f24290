//! The coordinator's HTTP side (axum): the artists' web page
//! ([`crate::web`], at `/`) and the API ([`crate::api`]: `/api/v1/…`,
//! `/api/openapi.json`, `/metrics`; docs/api.md). The page uses the API
//! only, like any other client.
//!
//! The router comes from [`app`], so tests can drive it without a socket.

use axum::Router;

pub use crate::api::{AppState, MAX_UPLOAD};

/// The HTTP routes: the page and the API.
pub fn app(state: AppState) -> Router {
    crate::web::routes(state.peers.clone()).merge(crate::api::router(state))
}
