//! One worker's connection, coordinator side: the join handshake, the
//! control stream, one stream per tile, and blob fetches.
//!
//! Everything a worker sends is untrusted: each message is read with a
//! size limit chosen before reading (the tile's own pixel count for a
//! result), a result must answer the lease its stream was opened for and
//! match that tile's rectangle, and its accumulators are shape-checked and
//! their NaNs made canonical before the core sees them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_protocol::proof;
use tessera_protocol::wire::{
    max_tile_reply, BlobHeader, CoordinatorMsg, GpuClass, TileReply, TileTask, WorkerMsg, WorkerOpen,
    MAX_CONTROL_MESSAGE, MAX_HELD_TILES, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use tessera_worker::net::{read_last, read_msg, spawn_reader, tls, within, write_msg, NetError};
use tokio::sync::mpsc;

use super::lock;
use super::msg::{ConnCmd, CoreMsg};
use super::verify::{SpotCheck, TileProof, Verifier};
use crate::scheduler::WorkerId;
use tessera_protocol::hex;
use tessera_store::{Blobs, Store, StoreError, TokenKind};

/// Control messages (acks, revokes) queued for one worker at most: past
/// it the worker has stopped reading its control stream.
const CONTROL_QUEUE: usize = 1024;

/// What every connection task shares.
pub struct ConnContext {
    pub core: mpsc::UnboundedSender<CoreMsg>,
    pub store: Arc<Mutex<Store>>,
    pub blobs: Blobs,
    pub heartbeat: Duration,
    /// How long a leased tile may take before its stream is abandoned (the
    /// scheduler's lease deadline re-queues it).
    pub lease_timeout: Duration,
    pub next_worker: AtomicU64,
    /// Spot checks; `None` when they are turned off.
    pub verifier: Option<Arc<Verifier>>,
    /// Spot checks running at once: one per core. They are CPU-bound, and
    /// each holds a guest instance (scene, BVH, wasm memory); unbounded,
    /// 1,000 workers' results queued hundreds of them on the blocking pool
    /// and took the coordinator to 1.7 GiB (the soak, verification on).
    pub checks: Arc<tokio::sync::Semaphore>,
    /// Adaptive replication on.
    pub replication: bool,
    pub trust_threshold: u64,
}

/// Codes the coordinator closes a connection with.
pub mod close {
    pub const REFUSED: u32 = 1;
    pub const PROTOCOL: u32 = 2;
    pub const SILENT: u32 = 3;
    pub const SHUTDOWN: u32 = 4;
    pub const LEFT: u32 = 5;
    pub const QUARANTINED: u32 = 6;
}

/// Serves one incoming connection until it ends.
pub async fn serve(incoming: quinn::Incoming, ctx: Arc<ConnContext>) {
    let remote = incoming.remote_address();
    let conn = match within(Duration::from_secs(10), async { incoming.await.map_err(NetError::from) }).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(%remote, error = %e, "handshake failed");
            return;
        }
    };
    if let Err(e) = serve_worker(&conn, &ctx).await {
        tracing::info!(%remote, error = %e, "worker connection ended");
    }
}

async fn refuse(conn: &quinn::Connection, send: &mut quinn::SendStream, reason: &str) -> NetError {
    let _ = write_msg(send, &CoordinatorMsg::Refused { reason: reason.to_string() }).await;
    let _ = send.finish();
    // Give the refusal a moment to arrive before the close frame.
    let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
    conn.close(close::REFUSED.into(), reason.as_bytes());
    NetError::Refused(reason.to_string())
}

async fn serve_worker(conn: &quinn::Connection, ctx: &Arc<ConnContext>) -> Result<(), NetError> {
    let identity = tls::peer_identity(conn)?;
    let (mut control_tx, mut control_rx) =
        within(Duration::from_secs(10), async { Ok(conn.accept_bi().await?) }).await?;
    let (hello, mut holding) =
        match within(Duration::from_secs(10), read_msg::<WorkerOpen>(&mut control_rx, MAX_CONTROL_MESSAGE)).await {
            Ok(WorkerOpen::Control(hello)) => (hello, Vec::new()),
            Ok(WorkerOpen::Rejoin { hello, holding }) => (hello, holding),
            Ok(WorkerOpen::Blob { .. }) => return Err(refuse(conn, &mut control_tx, "say hello first").await),
            Err(e) => {
                conn.close(close::PROTOCOL.into(), e.to_string().as_bytes());
                return Err(e);
            }
        };
    if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version) {
        let reason = format!(
            "protocol version {} is not supported (this coordinator speaks {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION})",
            hello.version
        );
        return Err(refuse(conn, &mut control_tx, &reason).await);
    }
    match check_token(ctx, &hello.token).await {
        Ok(Some(_)) if quarantined(ctx, &identity).await => {
            let reason = "this worker is quarantined after repeated failed checks; the farm's admin can clear it";
            return Err(refuse(conn, &mut control_tx, reason).await);
        }
        Ok(Some(_)) => {}
        Ok(None) => return Err(refuse(conn, &mut control_tx, "unknown or revoked join token").await),
        Err(e) => {
            tracing::error!(error = %e, "checking a join token");
            return Err(refuse(conn, &mut control_tx, "the coordinator could not check the token").await);
        }
    }
    let caps = &hello.capabilities;
    let slots = caps.slots.clamp(1, 1024);
    if let Some(Err(e)) = caps.gpu_class.as_ref().map(|c| c.check()) {
        return Err(refuse(conn, &mut control_tx, &format!("capabilities: {e}")).await);
    }
    let gpu = caps.gpu_class.clone();
    // A name for pages and logs: printable and short, whatever was sent.
    let name: String = hello.name.chars().filter(|c| !c.is_control()).take(64).collect();
    {
        let (store, identity, name) = (ctx.store.clone(), identity.clone(), name.clone());
        let caps_json = serde_json::json!({
            "slots": caps.slots, "cores": caps.cores, "memory_bytes": caps.memory_bytes,
            "gpu": caps.gpu, "agent": caps.agent,
        })
        .to_string();
        let _ = tokio::task::spawn_blocking(move || {
            lock(&store).upsert_worker(&identity, &name, &caps_json, super::writer::unix_ms())
        })
        .await;
    }
    write_msg(
        &mut control_tx,
        &CoordinatorMsg::Welcome { identity: identity.clone(), heartbeat_ms: ctx.heartbeat.as_millis() as u64 },
    )
    .await?;

    let worker = WorkerId(ctx.next_worker.fetch_add(1, Ordering::Relaxed));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let addr = conn.remote_address().ip();
    // A claim, bounded: the scheduler decides which of these it still wants.
    holding.truncate(MAX_HELD_TILES);
    let _ = ctx.core.send(CoreMsg::Joined { worker, identity, name, slots, addr, tx, gpu: gpu.clone(), holding });
    let mut heartbeats: u64 = 0;
    let mut control = spawn_reader::<WorkerMsg>(control_rx, MAX_CONTROL_MESSAGE);
    // The token is re-checked beside the loop, never in it: a store busy
    // with commits and API reads must not hold up this worker's heartbeats
    // and acks (under load that once cost workers their connections).
    let (revoked_tx, mut revoked_rx) = mpsc::channel::<()>(1);
    let checking = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Acks and revokes go out through a task of their own: a worker slow
    // to read them (its receive window full, its process busy) must not
    // stall this loop, which forwards its heartbeats: under the soak on
    // PostgreSQL, workers whose ack write waited were dropped for missed
    // heartbeats they had sent. One that stops reading fills the queue
    // and is disconnected.
    let (writes, mut queued) = mpsc::channel::<CoordinatorMsg>(CONTROL_QUEUE);
    let mut writer = tokio::spawn(async move {
        while let Some(msg) = queued.recv().await {
            write_msg(&mut control_tx, &msg).await?;
        }
        Ok::<(), NetError>(())
    });
    let send = |msg: CoordinatorMsg| match writes.try_send(msg) {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(_)) => {
            Some(Err(NetError::Protocol(format!("the worker left {CONTROL_QUEUE} control messages unread"))))
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Some(Err(NetError::Closed)),
    };
    let result = loop {
        tokio::select! {
            msg = control.recv() => match msg.unwrap_or(Err(NetError::Closed)) {
                Ok(WorkerMsg::Heartbeat) => {
                    heartbeats += 1;
                    let _ = ctx.core.send(CoreMsg::Heartbeat { worker });
                    // A revoked token ends the connection within a few heartbeats.
                    if heartbeats.is_multiple_of(4) && !checking.swap(true, Ordering::AcqRel) {
                        let (ctx, token, revoked_tx, checking) =
                            (ctx.clone(), hello.token.clone(), revoked_tx.clone(), checking.clone());
                        tokio::spawn(async move {
                            if !token_valid(&ctx, &token).await {
                                let _ = revoked_tx.send(()).await;
                            }
                            checking.store(false, Ordering::Release);
                        });
                    }
                }
                Ok(WorkerMsg::Leaving) => {
                    tracing::info!(worker = worker.0, "worker is leaving");
                    break Ok(());
                }
                Err(e) => break Err(e),
            },
            cmd = rx.recv() => {
                // Take every command already waiting: acks that one store
                // commit released go out as one message.
                let mut cmds = vec![cmd];
                while let Ok(more) = rx.try_recv() {
                    cmds.push(Some(more));
                }
                let mut acks = Vec::new();
                let mut end = None;
                for cmd in cmds {
                    match cmd {
                        Some(ConnCmd::Dispatch(task)) => {
                            let (conn, ctx, gpu) = (conn.clone(), ctx.clone(), gpu.clone());
                            tokio::spawn(async move { run_tile(&conn, &ctx, worker, task, gpu.as_ref()).await });
                        }
                        Some(ConnCmd::Ack(lease, ack)) => acks.push((lease, ack)),
                        Some(ConnCmd::Revoke(lease)) => {
                            if let Some(e) = send(CoordinatorMsg::Revoke { lease }) {
                                end = end.or(Some(e));
                            }
                        }
                        Some(ConnCmd::Disconnect) | None => {
                            conn.close(close::SILENT.into(), b"missed heartbeats");
                            end = Some(Ok(()));
                        }
                    }
                }
                if !acks.is_empty() {
                    if let Some(e) = send(CoordinatorMsg::Acks(acks)) {
                        end = end.or(Some(e));
                    }
                }
                if let Some(end) = end {
                    break end;
                }
            },
            written = &mut writer => break written.unwrap_or(Err(NetError::Closed)),
            Some(()) = revoked_rx.recv() => {
                conn.close(close::REFUSED.into(), b"join token revoked");
                break Err(NetError::Refused("join token revoked".into()));
            },
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_blob(&ctx, send, recv).await {
                            tracing::debug!(error = %e, "blob stream failed");
                        }
                    });
                }
                Err(e) => break Err(e.into()),
            },
        }
    };
    let _ = ctx.core.send(CoreMsg::Left { worker });
    // The worker is gone as far as the scheduler knows: end the connection
    // too, so nothing more arrives from it.
    match &result {
        Ok(()) => conn.close(close::LEFT.into(), b"goodbye"),
        Err(e) => conn.close(close::PROTOCOL.into(), e.to_string().as_bytes()),
    }
    result
}

/// The join token's id, if it exists and is not revoked (off the runtime:
/// SQLite blocks).
async fn check_token(ctx: &ConnContext, token: &str) -> Result<Option<u64>, StoreError> {
    let (store, token) = (ctx.store.clone(), token.to_string());
    tokio::task::spawn_blocking(move || lock(&store).check_token(TokenKind::Worker, &token))
        .await
        .unwrap_or_else(|e| Err(StoreError::NotFound(format!("token check task: {e}"))))
}

/// Adaptive replication: below the trust threshold every result needs a
/// second opinion; above it, one does with probability
/// `max(1 / consecutive valid results, 2 %)`. GPU tiles go by the
/// worker's GPU trust, earned apart.
async fn needs_second_opinion(ctx: &ConnContext, identity: &str, gpu: bool) -> bool {
    let (store, identity) = (ctx.store.clone(), identity.to_string());
    let trust = tokio::task::spawn_blocking(move || lock(&store).standing(&identity))
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten()
        .map_or(0, |s| if gpu { s.gpu_trust } else { s.trust });
    if trust < ctx.trust_threshold {
        return true;
    }
    let p = (1.0 / trust as f64).max(0.02);
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return true;
    }
    (u64::from_le_bytes(bytes) as f64 / u64::MAX as f64) < p
}

/// Whether the worker is quarantined (a store error lets it in: its tiles
/// are checked all the same).
async fn quarantined(ctx: &ConnContext, identity: &str) -> bool {
    let (store, identity) = (ctx.store.clone(), identity.to_string());
    tokio::task::spawn_blocking(move || lock(&store).standing(&identity))
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten()
        .is_some_and(|s| s.quarantined)
}

/// Whether a connected worker's token still holds. A store error keeps the
/// worker connected: an operator's revocation is what ends it.
async fn token_valid(ctx: &ConnContext, token: &str) -> bool {
    !matches!(check_token(ctx, token).await, Ok(None))
}

/// One tile's stream: send the task, read and check the result, hand it to
/// the core, and send the ack once the core says it is durable.
async fn run_tile(
    conn: &quinn::Connection,
    ctx: &ConnContext,
    worker: WorkerId,
    task: TileTask,
    gpu: Option<&GpuClass>,
) {
    let lease = task.lease;
    let error = match tile_exchange(conn, ctx, worker, &task, gpu).await {
        Ok(()) => return,
        Err(e) => e,
    };
    // A lost connection is not the tile's fault: the worker's leases go
    // back to the queue when the connection task reports it gone.
    // A refused result was reported by the exchange itself.
    if conn.close_reason().is_some() || is_connection_loss(&error) || matches!(error, NetError::Protocol(_)) {
        return;
    }
    tracing::debug!(worker = worker.0, lease, error = %error, "tile stream failed");
    // An unknown or already-finished lease is ignored by the scheduler.
    let _ = ctx.core.send(CoreMsg::TileFailed { worker, lease, error: error.to_string() });
}

fn is_connection_loss(e: &NetError) -> bool {
    matches!(
        e,
        NetError::Connection(_)
            | NetError::Read(quinn::ReadError::ConnectionLost(_))
            | NetError::Write(quinn::WriteError::ConnectionLost(_))
    )
}

async fn tile_exchange(
    conn: &quinn::Connection,
    ctx: &ConnContext,
    worker: WorkerId,
    task: &TileTask,
    worker_gpu: Option<&GpuClass>,
) -> Result<(), NetError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_msg(&mut send, task).await?;
    let _ = send.finish();
    let max = max_tile_reply(task.rect.pixel_count());
    let reply = within(ctx.lease_timeout, read_last::<TileReply>(&mut recv, max, Duration::from_millis(100))).await;
    let reject = |reason: String| {
        let _ = ctx.core.send(CoreMsg::Reject { worker, lease: task.lease, reason: reason.clone() });
        NetError::Protocol(reason)
    };
    let mut result = match reply {
        Ok(TileReply::Done(r)) => r,
        Ok(TileReply::Failed { lease, error, .. }) if lease == task.lease => {
            let _ = ctx.core.send(CoreMsg::TileFailed { worker, lease, error });
            return Ok(());
        }
        Ok(TileReply::Failed { lease, .. }) => {
            return Err(reject(format!("a failure for lease {lease}, which this stream is not")))
        }
        Err(e @ NetError::Wire(_)) => return Err(reject(e.to_string())),
        Err(e) => return Err(e),
    };
    if result.lease != task.lease || result.tile != task.tile {
        return Err(reject(format!(
            "a result for lease {} tile {}, which this worker was not given here",
            result.lease, result.tile
        )));
    }
    if result.accumulators.rect != task.rect {
        return Err(reject(format!("a result for {:?}, not the tile's {:?}", result.accumulators.rect, task.rect)));
    }
    if let Err(e) = result.accumulators.check_shape() {
        return Err(reject(format!("a malformed tile: {e}")));
    }
    // A denoised job's frames need every tile's guides, and nothing else
    // rides along: a tile without them would leave a hole in the
    // denoiser's input that no check of the colour would see.
    if let Some(problem) = tessera_protocol::wire::guides_problem(&result.accumulators, task.job.guides) {
        return Err(reject(format!("a malformed tile: {problem}")));
    }
    // A GPU result only where the tile was leased for the GPU, and only
    // from the GPU class the worker declared: the class decides how the
    // tile is checked and who may give its second opinion.
    if let Some(class) = &result.gpu {
        if !task.gpu {
            return Err(reject("a GPU result for a tile leased for the CPU".into()));
        }
        if Some(class) != worker_gpu {
            return Err(reject(format!("a result from GPU {class}, which is not the GPU this worker declared")));
        }
    }
    // Proof-of-render, first half: the commitment must cover exactly these
    // pixels for exactly this task, signed by the key this connection
    // authenticated with (spot checks follow in the verifier).
    result.accumulators.canonicalize_nans();
    let bytes = result.accumulators.to_bytes();
    let (identity, key) = tls::peer_key(conn)?;
    if proof::commitment_on(&task.claim(), result.gpu.as_ref(), &bytes) != result.commitment {
        let reason = "the commitment does not match the task and the pixels sent".to_string();
        failed_check(conn, ctx, &identity, task, &reason, evidence(task, &result, &key, None)).await;
        return Err(reject(reason));
    }
    if let Err(e) = proof::verify(&key, &result.commitment, &result.signature) {
        let reason = format!("the tile's signature: {e}");
        failed_check(conn, ctx, &identity, task, &reason, evidence(task, &result, &key, None)).await;
        return Err(reject(reason));
    }
    // Second half: re-render the pixels the epoch's secret picks, off the runtime.
    let mut outside_tolerance = false;
    let spot_check = match &ctx.verifier {
        None => None,
        Some(verifier) => {
            let (verifier, t) = (verifier.clone(), task.clone());
            let permit =
                ctx.checks.clone().acquire_owned().await.map_err(|_| NetError::Protocol("shutting down".into()))?;
            let (r, verdict) = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let verdict = verifier.check(
                    &t,
                    &result.accumulators,
                    &result.commitment,
                    result.gpu.as_ref(),
                    super::writer::unix_ms(),
                );
                (result, verdict)
            })
            .await
            .map_err(|e| NetError::Protocol(format!("verifier task: {e}")))?;
            result = r;
            match verdict {
                Ok(check) if check.passed() => Some(check),
                // Statistics alone never count against a worker: a GPU
                // tile outside the tolerance waits for a second worker of
                // its class, whose hash decides (`gpu_check.rs`).
                Ok(check) if check.gpu.is_some() => {
                    let c = check.gpu.as_ref().expect("matched");
                    tracing::info!(
                        worker = worker.0,
                        job = task.job.job,
                        tile = task.tile,
                        outliers = c.outliers,
                        allowed = c.allowed,
                        "GPU tile outside the tolerance; replicating it within its class"
                    );
                    outside_tolerance = true;
                    Some(check)
                }
                Ok(check) => {
                    let (x, y) = check.mismatch.unwrap_or_default();
                    tracing::warn!(worker = worker.0, %identity, job = task.job.job, tile = task.tile, x, y, "spot check failed");
                    let reason = format!(
                        "spot check failed: pixel ({x}, {y}) differs from the coordinator's re-render (epoch {})",
                        check.epoch
                    );
                    let evidence = evidence(task, &result, &key, Some(&check));
                    failed_check(conn, ctx, &identity, task, &reason, evidence).await;
                    return Err(reject(reason));
                }
                Err(e) => {
                    // Not the worker's fault: the tile goes back to the queue.
                    tracing::error!(error = %e, job = task.job.job, tile = task.tile, "could not run a spot check");
                    let _ = ctx.core.send(CoreMsg::TileFailed {
                        worker,
                        lease: task.lease,
                        error: format!("the coordinator could not verify the tile: {e}"),
                    });
                    return Ok(());
                }
            }
        }
    };
    let record = TileProof {
        worker: identity,
        public_key: hex(&key),
        commitment: hex(&result.commitment),
        signature: hex(&result.signature),
        sample_start: task.samples.start,
        sample_count: task.samples.count,
        signature_checked: true,
        spot_check,
        gpu: result.gpu.clone(),
        confirmed_by: None,
    };
    let replicate =
        ctx.replication && (outside_tolerance || needs_second_opinion(ctx, &record.worker, result.gpu.is_some()).await);
    let _ = ctx.core.send(CoreMsg::TileDone { worker, lease: task.lease, result, proof: record, replicate });
    Ok(())
}

/// What a failed check keeps: the task, the signed commitment, the key and
/// what the spot check found (JSON).
fn evidence(
    task: &TileTask,
    result: &tessera_protocol::wire::TileResult,
    key: &[u8; 32],
    spot: Option<&SpotCheck>,
) -> String {
    serde_json::json!({
        "lease": task.lease, "job": task.job.job, "frame": task.frame, "tile": task.tile,
        "samples": [task.samples.start, task.samples.count],
        "commitment": hex(&result.commitment), "signature": hex(&result.signature),
        "public_key": hex(key), "spot_check": spot,
    })
    .to_string()
}

/// A failed check: the evidence is kept, the worker's trust and reputation
/// drop, and a worker quarantined by it is disconnected.
async fn failed_check(
    conn: &quinn::Connection,
    ctx: &ConnContext,
    identity: &str,
    task: &TileTask,
    reason: &str,
    evidence: String,
) {
    let (store, who, reason, job, tile) =
        (ctx.store.clone(), identity.to_string(), reason.to_string(), task.job.job, task.tile);
    let quarantined = tokio::task::spawn_blocking(move || {
        lock(&store).record_failed_check(&who, job, tile, &reason, &evidence, super::writer::unix_ms())
    })
    .await;
    match quarantined {
        Ok(Ok(true)) => {
            tracing::error!(%identity, "worker quarantined after repeated failed checks");
            conn.close(close::QUARANTINED.into(), b"quarantined after repeated failed checks; ask the farm's admin");
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "recording a failed check"),
        Err(e) => tracing::error!(error = %e, "recording a failed check"),
    }
}

/// Sends a blob a worker asked for.
async fn serve_blob(
    ctx: &ConnContext,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), NetError> {
    let hash = match read_msg::<WorkerOpen>(&mut recv, MAX_CONTROL_MESSAGE).await? {
        WorkerOpen::Blob { hash } => hash,
        WorkerOpen::Control(_) | WorkerOpen::Rejoin { .. } => {
            return Err(NetError::Protocol("a second control stream".into()))
        }
    };
    let blobs = ctx.blobs.clone();
    let bytes =
        tokio::task::spawn_blocking(move || blobs.get(&hash.0)).await.map_err(|e| NetError::Protocol(e.to_string()))?;
    match bytes {
        Ok(bytes) => {
            write_msg(&mut send, &BlobHeader::Found { size: bytes.len() as u64 }).await?;
            send.write_all(&bytes).await?;
        }
        Err(e) => {
            tracing::warn!(%hash, error = %e, "a worker asked for a blob we cannot serve");
            write_msg(&mut send, &BlobHeader::NotFound).await?;
        }
    }
    let _ = send.finish();
    Ok(())
}
