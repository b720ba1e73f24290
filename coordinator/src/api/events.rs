//! Server-sent events: tiles, frames, job states and workers as they
//! happen, for one job or the whole farm.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures_util::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::auth::require;
use super::error::ApiError;
use super::jobs::{job_id, load_job};
use super::model::{ErrorBody, Event};
use super::AppState;
use tessera_store::Scope;

/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn sse(event: &Event) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    SseEvent::default().event(event.name()).data(data)
}

/// Subscribes and turns the broadcast into SSE, keeping the events `keep`
/// accepts; a subscriber that fell behind gets a `lagged` event.
fn stream_of(
    state: &AppState,
    keep: impl Fn(&Event) -> bool + Send + 'static,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    BroadcastStream::new(state.farm.subscribe()).filter_map(move |item| {
        let out = match item {
            Ok(event) if keep(&event) => Some(Ok(sse(&event))),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Ok(sse(&Event::Lagged { missed }))),
        };
        std::future::ready(out)
    })
}

/// Every event of the farm.
#[utoipa::path(get, path = "/events", tag = "events",
    responses((status = 200, description = "server-sent events: job, tile, frame, worker, lagged",
        content_type = "text/event-stream", body = Event),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn farm(State(state): State<AppState>, headers: HeaderMap) -> Result<impl IntoResponse, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    Ok(Sse::new(stream_of(&state, |_| true)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One job's events; the first is a `job` event with its state now.
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "events", params(("id" = u64, Path)),
    responses((status = 200, description = "server-sent events: job, tile, frame, lagged",
        content_type = "text/event-stream", body = Event),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    let id = job_id(&id)?;
    // Subscribe before the snapshot, so nothing falls between the two.
    let live = stream_of(&state, move |e| e.job().is_none_or(|j| j == id) && !matches!(e, Event::Worker { .. }));
    let now = load_job(&state, id).await?;
    let first = Event::Job { job: id, state: now.state, error: now.error };
    let events = stream::once(std::future::ready(Ok(sse(&first)))).chain(live);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
