//! The studios' HTTP API (docs/api.md): resources under `/api/v1`, the
//! OpenAPI document, server-sent events and Prometheus metrics.
//!
//! Handlers are registered with utoipa-axum's [`OpenApiRouter`], which
//! takes each route and its `#[utoipa::path]` documentation in one call,
//! so `/api/openapi.json` describes exactly the routes that exist (a test
//! checks that against the live server too).
//!
//! - [`model`]: the JSON types (shared with the CLI);
//! - [`auth`]: bearer tokens and scopes; [`error`]: every error as JSON;
//! - [`jobs`], [`frames`], [`events`], [`workers`], [`system`]: the routes.

pub mod auth;
pub mod error;
pub mod etag;
pub mod events;
pub mod frames;
pub mod jobs;
/// The API's JSON types live in the client crate, which reads them back.
pub use tessera_client::model;
pub mod scenes;
pub mod submission;
pub mod system;
pub mod tiles;
pub mod workers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::error::ApiError;
use crate::farm::Farm;
use tessera_store::{Store, StoreError};

/// Default largest request body (a scene upload), in bytes: larger is a
/// 413. `tessera coordinator --max-upload-mib` changes it.
pub const MAX_UPLOAD: usize = 512 << 20;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub farm: Arc<Farm>,
    /// The job module used for submissions (the path tracer built into the
    /// `tessera` binary); `None` refuses submissions with a clear error.
    pub default_module: Option<Arc<Vec<u8>>>,
    /// Requests answered, by status class (index 1 to 5), for `/metrics`.
    pub requests: Arc<[AtomicU64; 6]>,
    /// Largest request body, in bytes ([`MAX_UPLOAD`] by default).
    pub max_upload: usize,
    /// Key of download links' MACs ([`auth`]), drawn at start; `None`
    /// (no system entropy) disables links.
    pub link_key: Option<[u8; 32]>,
    /// The farm's other coordinators (PostgreSQL): listed by the health
    /// check, and the origins whose pages may call this API.
    pub peers: Option<crate::farm::database::Peers>,
    /// API tokens recently found valid ([`auth::TokenCache`]).
    pub tokens: Arc<auth::TokenCache>,
}

impl AppState {
    pub fn new(farm: Arc<Farm>, default_module: Option<Arc<Vec<u8>>>) -> AppState {
        let mut key = [0u8; 32];
        let link_key = match getrandom::fill(&mut key) {
            Ok(()) => Some(key),
            Err(e) => {
                tracing::error!("no system entropy ({e}): download links are disabled");
                None
            }
        };
        AppState {
            farm,
            default_module,
            requests: Arc::new(Default::default()),
            max_upload: MAX_UPLOAD,
            link_key,
            peers: None,
            tokens: Arc::default(),
        }
    }
}

/// Runs a read `f` on a reader of the store ([`crate::farm::Farm::reader`])
/// on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.farm.reader().clone();
    Ok(tokio::task::spawn_blocking(move || f(&mut crate::farm::lock(&store))).await??)
}

/// Runs `f`, which writes, on the store itself on a blocking thread.
pub async fn blocking_write<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.farm.store().clone();
    Ok(tokio::task::spawn_blocking(move || f(&mut crate::farm::lock(&store))).await??)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tessera", description = "A render farm whose jobs run as sandboxed WebAssembly. See docs/api.md."),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Submit, follow, cancel, retry and delete jobs"),
        (name = "frames", description = "Finished frames: PNG, EXR, archives"),
        (name = "events", description = "Server-sent events"),
        (name = "workers", description = "The farm's workers"),
        (name = "system", description = "Health and status"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (`ta_…`) from `tessera token create --kind api --scope …`"))
                    .build(),
            ),
        );
    }
}

/// The `/api/v1` routes and their OpenAPI document.
fn versioned() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::get, jobs::delete))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::retry))
        .routes(routes!(jobs::log))
        .routes(routes!(frames::list))
        .routes(routes!(frames::file))
        .routes(routes!(frames::archive))
        .routes(routes!(frames::link))
        .routes(routes!(tiles::list))
        .routes(routes!(tiles::get))
        .routes(routes!(tiles::preview))
        .routes(routes!(scenes::inspect))
        .routes(routes!(events::job))
        .routes(routes!(events::farm))
        .routes(routes!(workers::list))
        .routes(routes!(workers::clear))
        .routes(routes!(workers::ledger))
        .routes(routes!(workers::epochs))
        .routes(routes!(system::health))
        .routes(routes!(system::status))
}

/// The OpenAPI document of the API as this build serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, doc) =
        OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi()).nest("/api/v1", versioned()).split_for_parts();
    doc
}

/// The API's routes (`/api/v1/…`, `/api/openapi.json`, `/metrics`), with
/// the upload limit, JSON 404s under `/api` and request counting.
pub fn router(state: AppState) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", versioned()).split_for_parts();
    let doc = Arc::new(doc);
    let counted = state.clone();
    api.route("/api/openapi.json", get(move || std::future::ready(Json(doc.as_ref().clone()))))
        .route("/metrics", get(system::metrics))
        .route("/api", get(no_route))
        .route("/api/{*rest}", axum::routing::any(no_route))
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this route does not take that method: see /api/openapi.json")
        })
        .layer(DefaultBodyLimit::max(state.max_upload))
        .layer(axum::middleware::from_fn_with_state(counted, count_requests))
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such route: see /api/openapi.json")
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let class = usize::from(response.status().as_u16() / 100).min(5);
    state.requests[class].fetch_add(1, Ordering::Relaxed);
    response
}
