//! What a coordinator answers on HTTP while another leads the farm
//! (PostgreSQL): it binds its address at once, so load balancers and
//! health checks see it, and until it wins the lease it
//!
//! - answers `/api/v1/health` (role `standby`, who leads, the farm's
//!   coordinators) and `/metrics` (`tessera_store_leader 0`) itself;
//! - forwards everything else, the page and the API, to the leader and
//!   streams its answer back, so any coordinator's address works;
//! - when no leader is known or it does not answer (it just died), answers
//!   `503 Service Unavailable`, code `standby`, with `Retry-After`: a
//!   client given several coordinators (`tessera --url a,b`) moves on to
//!   the next, and nothing was acted on.
//!
//! [`Switch`] is the router the listener serves: the standby's first, the
//! farm's once the lease is this coordinator's, on the same socket.
//!
//! The farm's coordinators may also call each other's API from their
//! pages: [`Switch`] answers cross-origin requests from the origins of
//! coordinators that announced themselves, and only those (the API's
//! credentials are bearer tokens in a header, never cookies).

use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower::ServiceExt as _;

use crate::api::model::{ErrorBody, FarmCoordinator, Health};
use crate::farm::database::{Peers, PeersView};

/// The farm's coordinators for the health check, each announced one with
/// its role: `leader` is who leads (the lease's holder when `None`).
pub fn listed(view: &PeersView, leader: Option<&str>) -> Vec<FarmCoordinator> {
    let leader = leader.or_else(|| view.leading());
    view.members
        .iter()
        .map(|m| FarmCoordinator {
            role: if leader == Some(m.name.as_str()) { "leader" } else { "standby" }.into(),
            name: m.name.clone(),
            url: m.http_url.clone(),
        })
        .collect()
}

/// The routes of a coordinator standing by.
pub fn router(peers: Peers) -> Router {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    Router::new()
        .route("/api/v1/health", get(health).with_state(peers.clone()))
        .route("/metrics", get(metrics))
        .fallback(elsewhere)
        .with_state(Forward { peers, client })
}

async fn health(State(peers): State<Peers>) -> Json<Health> {
    let view = peers.view();
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: 0,
        workers: 0,
        jobs_active: 0,
        store: "postgres".into(),
        role: "standby".into(),
        term: None,
        store_latency_ms: 0.0,
        coordinators: listed(&view, None),
        leader: view.leading().map(str::to_owned),
    })
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        "# HELP tessera_store_leader 1: this coordinator runs the farm (holds the PostgreSQL lease, or owns the SQLite file).\n\
         # TYPE tessera_store_leader gauge\n\
         tessera_store_leader{store=\"postgres\"} 0\n",
    )
}

/// Everything but the health check and the metrics: forwarded to the
/// leader as it came (method, path, headers, streamed body), and its answer
/// streamed back, so the page and the API work through any coordinator.
/// With no leader known, or one that does not answer, a `503` code
/// `standby` (nothing was acted on: a client may retry, or move on).
async fn elsewhere(State(forward): State<Forward>, request: Request) -> Response {
    let peers = &forward.peers;
    let Some(leader) = peers.leader() else {
        return unavailable(format!(
            "coordinator {} stands by, and no coordinator leads the farm right now: retry shortly",
            peers.me
        ));
    };
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{}{path}", leader.http_url.trim_end_matches('/')).parse::<axum::http::Uri>() else {
        return unavailable(format!("the leader's address {:?} is not a URL", leader.http_url));
    };
    parts.uri = uri;
    parts.headers.remove(header::HOST);
    for hop in [header::CONNECTION, header::TE, header::TRAILER, header::TRANSFER_ENCODING, header::UPGRADE] {
        parts.headers.remove(hop);
    }
    match forward.client.request(axum::http::Request::from_parts(parts, body)).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(e) => unavailable(format!(
            "coordinator {} stands by, and the leader {} at {} does not answer ({e}): retry shortly",
            peers.me, leader.name, leader.http_url
        )),
    }
}

fn unavailable(error: String) -> Response {
    let mut response =
        (StatusCode::SERVICE_UNAVAILABLE, Json(ErrorBody { error, code: "standby".into() })).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The standby's forwarding: the farm's coordinators and an HTTP client.
#[derive(Clone)]
struct Forward {
    peers: Peers,
    client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, axum::body::Body>,
}

/// The origin of a cross-origin request that comes from a page of one of
/// the farm's coordinators (so an artist's page keeps following its job
/// through another one when the coordinator it came from dies). Other
/// origins get no CORS headers, and browsers keep their pages out.
fn allowed_origin(peers: &Peers, request: &Request) -> Option<String> {
    let origin = request.headers().get(header::ORIGIN)?.to_str().ok()?;
    peers.is_member_origin(origin).then(|| origin.to_owned())
}

fn add_cors(response: &mut Response, origin: &str, preflight: bool) {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE, OPTIONS"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("etag, retry-after"));
}

/// A router whose routes can be replaced while it serves.
#[derive(Clone)]
pub struct Switch(Arc<RwLock<Router>>);

impl Switch {
    pub fn new(first: Router) -> Switch {
        Switch(Arc::new(RwLock::new(first)))
    }

    /// Serves `next` from the next request on (requests in flight finish
    /// on the routes they started on).
    pub fn set(&self, next: Router) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = next;
    }

    /// The router to serve: each request goes to the current routes, with
    /// the farm's cross-origin rule around them.
    pub fn router(&self, peers: Peers) -> Router {
        let current = self.0.clone();
        Router::new().fallback_service(tower::service_fn(move |request: Request| {
            let routes = current.read().unwrap_or_else(|p| p.into_inner()).clone();
            let origin = allowed_origin(&peers, &request);
            async move {
                let preflight = request.method() == Method::OPTIONS && origin.is_some();
                let mut response = if preflight {
                    StatusCode::NO_CONTENT.into_response()
                } else {
                    routes.oneshot(request).await.into_response()
                };
                if let Some(origin) = origin {
                    add_cors(&mut response, &origin, preflight);
                }
                Ok::<_, Infallible>(response)
            }
        }))
    }
}
