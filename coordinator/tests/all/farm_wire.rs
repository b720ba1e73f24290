//! A worker that breaks the protocol, driven by hand over real QUIC: each
//! breach is refused with a reason, and the farm keeps going.

use std::sync::Arc;
use std::time::Duration;

use tessera_coordinator::farm::Farm;
use tessera_protocol::proof::SigningKey;
use tessera_protocol::wire::{
    self, Capabilities, CoordinatorMsg, Hello, TileAck, TileReply, TileResult, TileTask, WorkerOpen,
    MAX_CONTROL_MESSAGE, PROTOCOL_VERSION,
};
use tessera_store::{JobState, TokenKind};
use tessera_worker::client::Worker;
use tessera_worker::net::{read_msg, tls, transport, write_msg};

use crate::farm::{request_with_spp, runtime, scenes, test_config};
use crate::guest;

/// A hand-driven worker connection that has said hello.
pub struct RawWorker {
    pub conn: quinn::Connection,
    /// The key of the certificate this connection presented.
    pub key: SigningKey,
    pub identity: tls::Identity,
    pub control: (quinn::SendStream, quinn::RecvStream),
    _endpoint: quinn::Endpoint,
}

pub async fn raw_connect(farm: &Farm, token: &str) -> RawWorker {
    raw_connect_as(farm, token, tls::Identity::generate("raw").unwrap()).await
}

/// Connects with a given identity and says hello; panics unless welcomed.
async fn raw_connect_as(farm: &Farm, token: &str, identity: tls::Identity) -> RawWorker {
    raw_hello(farm, token, identity).await.unwrap_or_else(|refusal| panic!("not welcomed: {refusal:?}"))
}

/// Connects and says hello: the worker, or the coordinator's answer.
async fn raw_hello(farm: &Farm, token: &str, identity: tls::Identity) -> Result<RawWorker, CoordinatorMsg> {
    let caps = Capabilities { slots: 1, cores: 1, memory_bytes: 0, gpu: None, agent: "test".into(), gpu_class: None };
    raw_hello_with(farm, token, identity, caps).await
}

/// [`raw_hello`] with the capabilities to declare.
pub async fn raw_hello_with(
    farm: &Farm,
    token: &str,
    identity: tls::Identity,
    capabilities: Capabilities,
) -> Result<RawWorker, CoordinatorMsg> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(
        tls::client_config(&identity, farm.fingerprint(), transport(Duration::from_secs(5), 64)).unwrap(),
    );
    let conn = endpoint.connect(farm.quic_addr(), "tessera").unwrap().await.unwrap();
    let (mut tx, mut rx) = conn.open_bi().await.unwrap();
    let hello = Hello { version: PROTOCOL_VERSION, token: token.into(), name: "raw".into(), capabilities };
    write_msg(&mut tx, &WorkerOpen::Control(hello)).await.unwrap();
    let welcome: CoordinatorMsg = read_msg(&mut rx, MAX_CONTROL_MESSAGE).await.unwrap();
    if !matches!(welcome, CoordinatorMsg::Welcome { .. }) {
        return Err(welcome);
    }
    let key = SigningKey::from_pkcs8(&identity.key_der).unwrap();
    Ok(RawWorker { conn, key, identity, control: (tx, rx), _endpoint: endpoint })
}

impl RawWorker {
    pub async fn next_task(&self) -> (quinn::SendStream, quinn::RecvStream, TileTask) {
        let (send, mut recv) =
            tokio::time::timeout(Duration::from_secs(30), self.conn.accept_bi()).await.unwrap().unwrap();
        let task: TileTask = read_msg(&mut recv, MAX_CONTROL_MESSAGE).await.unwrap();
        (send, recv, task)
    }
}

fn result_for(task: &TileTask, key: &SigningKey) -> TileResult {
    let n = task.rect.pixel_count() as usize;
    let accumulators = tessera_protocol::TileAccumulators {
        rect: task.rect,
        color: vec![0.5; 3 * n],
        weight: vec![1.0; n],
        aovs: vec![],
    };
    task.seal(accumulators, 1, 1, None, key)
}

/// A farm for a hand-driven worker: it sends no heartbeats (they come a
/// minute apart), and its breaches count as failures on the job, so the
/// blocklist and the per-tile failure limit are out of its way.
pub fn raw_worker_config(data: &std::path::Path) -> tessera_coordinator::farm::FarmConfig {
    let mut config = test_config(data);
    config.heartbeat = Duration::from_secs(60);
    config.scheduler.blocklist_after = 100;
    config.scheduler.max_tile_failures = 100;
    config
}

/// [`raw_worker_config`] checking (nearly) every pixel of the tests' small
/// tiles, so a cheat of a few pixels is caught for certain rather than
/// with 99 %.
fn checking_every_pixel(data: &std::path::Path) -> tessera_coordinator::farm::FarmConfig {
    let mut config = raw_worker_config(data);
    config.verify.faked_fraction = 0.004;
    config.verify.target = 1.0;
    config
}

/// The verdict on `lease`, from the control stream. Generous: a verdict may
/// wait for other workers to start, compile the guest and render a second
/// opinion on a loaded 2-core machine (a bound on failure, not a timing).
pub async fn ack(control: &mut quinn::RecvStream, lease: u64) -> TileAck {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), read_msg(control, MAX_CONTROL_MESSAGE))
            .await
            .unwrap()
            .unwrap();
        if let CoordinatorMsg::Acks(list) = msg {
            if let Some((_, ack)) = list.into_iter().find(|(l, _)| *l == lease) {
                return ack;
            }
        }
    }
}

#[test]
fn protocol_breaches_are_refused_and_the_job_still_completes() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        // Each breach counts as a failure of the worker on the job; it stays
        // off the blocklist so it gets the next tile to break.
        let farm = Farm::start(raw_worker_config(&dir.path().join("coord"))).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let mut raw = raw_connect(&farm, &token).await;
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let job = farm.submit_scene(request_with_spp(4), scene, guest("pathtracer").to_vec()).await.unwrap();

        // 1. A result for a tile this stream was not given.
        let (mut send, _recv, task) = raw.next_task().await;
        let mut wrong = result_for(&task, &raw.key);
        wrong.tile += 1;
        write_msg(&mut send, &TileReply::Done(wrong)).await.unwrap();
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => assert!(reason.contains("was not given"), "{reason}"),
            other => panic!("accepted a result for another tile: {other:?}"),
        }

        // 2. A result for another lease.
        let (mut send, _recv, task) = raw.next_task().await;
        let mut wrong = result_for(&task, &raw.key);
        wrong.lease += 1000;
        write_msg(&mut send, &TileReply::Done(wrong)).await.unwrap();
        assert!(matches!(ack(&mut raw.control.1, task.lease).await, TileAck::Rejected { .. }));

        // 3. A message larger than any result for the tile could be: refused
        //    from its header, before the body is read.
        let (mut send, _recv, task) = raw.next_task().await;
        let claimed = wire::max_tile_reply(task.rect.pixel_count()) as u32 + 1;
        send.write_all(&claimed.to_le_bytes()).await.unwrap();
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => assert!(reason.contains("over the"), "{reason}"),
            other => panic!("{other:?}"),
        }

        // 4. A truncated message: half a result, then the stream ends.
        let (mut send, _recv, task) = raw.next_task().await;
        let bytes = wire::encode(&TileReply::Done(result_for(&task, &raw.key)));
        send.write_all(&bytes[..bytes.len() / 2]).await.unwrap();
        send.finish().unwrap();
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => assert!(reason.contains("truncated"), "{reason}"),
            other => panic!("{other:?}"),
        }

        // 5. A malformed tile: the right lease, the wrong number of floats.
        let (mut send, _recv, task) = raw.next_task().await;
        let mut bad = result_for(&task, &raw.key);
        bad.accumulators.weight.pop();
        write_msg(&mut send, &TileReply::Done(bad)).await.unwrap();
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => assert!(reason.contains("malformed"), "{reason}"),
            other => panic!("{other:?}"),
        }

        // 6. Signed by a key other than the connection's.
        let (mut send, _recv, task) = raw.next_task().await;
        let stranger = SigningKey::from_pkcs8(&tls::Identity::generate("other").unwrap().key_der).unwrap();
        write_msg(&mut send, &TileReply::Done(result_for(&task, &stranger))).await.unwrap();
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => assert!(reason.contains("signature"), "{reason}"),
            other => panic!("{other:?}"),
        }

        // 7. A valid signature over other pixels: one pixel changed after signing.
        let (mut send, _recv, task) = raw.next_task().await;
        let mut tampered = result_for(&task, &raw.key);
        tampered.accumulators.color[0] = 0.75;
        write_msg(&mut send, &TileReply::Done(tampered)).await.unwrap();
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => assert!(reason.contains("commitment"), "{reason}"),
            other => panic!("{other:?}"),
        }

        // Failed checks count against the worker (three quarantine it):
        // an admin clears it so the next breach can be tried.
        let raw_identity = tls::identity_of(&raw.identity.cert_der).unwrap();
        assert_eq!(farm.store().lock().unwrap().standing(&raw_identity).unwrap().unwrap().failed_checks, 2);
        assert!(farm.store().lock().unwrap().clear_worker(&raw_identity).unwrap());

        // 8. A replay: a signed result for another tile, relabelled as this one.
        let (mut send, _recv, task) = raw.next_task().await;
        let mut other_task = task.clone();
        other_task.tile += 1;
        other_task.frame += 1;
        let mut replay = result_for(&other_task, &raw.key);
        replay.tile = task.tile;
        write_msg(&mut send, &TileReply::Done(replay)).await.unwrap();
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => assert!(reason.contains("commitment"), "{reason}"),
            other => panic!("{other:?}"),
        }

        // 9. An oversized control message closes the connection.
        let (mut tx, _rx) = raw.control;
        tx.write_all(&(MAX_CONTROL_MESSAGE as u32 + 1).to_le_bytes()).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), raw.conn.closed()).await.unwrap();
        assert!(matches!(closed, quinn::ConnectionError::ApplicationClosed(_)), "{closed:?}");

        // Nothing the raw worker sent was stored; a real worker finishes the job.
        assert!(farm.store().lock().unwrap().done_tiles(job).unwrap().is_empty());
        let mut config = tessera_worker::client::WorkerConfig::new(
            farm.quic_addr().to_string(),
            token,
            farm.fingerprint(),
            dir.path().join("w"),
        );
        config.slots = 2;
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let worker = Worker::new(config).unwrap();
        tokio::spawn(async move { worker.run(stopped).await });
        let status = tokio::time::timeout(Duration::from_secs(120), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        farm.shutdown().await;
    });
}

/// The tile `task` asks for, rendered honestly (through the same sandbox
/// and module as a real worker), with `count` samples.
fn honest_pixels(task: &TileTask, scene: &[u8], count: u32) -> tessera_protocol::TileAccumulators {
    use tessera_worker::client::{sandbox_job, tile_request};
    use tessera_worker::sandbox::{Sandbox, SandboxConfig, TileRequest};
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let module = sandbox.load(&guest("pathtracer")).unwrap();
    let mut instance = module.instantiate(&sandbox_job(&task.job, scene.to_vec().into(), "honest".into())).unwrap();
    let request = TileRequest {
        samples: tessera_protocol::SampleRange { start: task.samples.start, count },
        ..tile_request(task)
    };
    let mut out = instance.render_tile(&request).unwrap().accumulators;
    out.canonicalize_nans();
    out
}

#[test]
fn cheating_workers_are_caught_by_spot_checks_and_never_reach_a_frame() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let farm = Farm::start(checking_every_pixel(&dir.path().join("coord"))).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let mut raw = raw_connect(&farm, &token).await;
        let raw_identity = tls::identity_of(&raw.identity.cert_der).unwrap();
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let job = farm.submit_scene(request_with_spp(4), scene.clone(), guest("pathtracer").to_vec()).await.unwrap();

        let expect_caught = |ack: TileAck, what: &str| match ack {
            TileAck::Rejected { reason } => assert!(reason.contains("spot check failed"), "{what}: {reason}"),
            TileAck::Accepted => panic!("{what} was accepted"),
        };

        // Noise: plausible values, signed correctly.
        let (mut send, _recv, task) = raw.next_task().await;
        let mut noise = honest_pixels(&task, &scene, task.samples.count);
        for (i, c) in noise.color.iter_mut().enumerate() {
            *c = ((i * 7919) % 1000) as f32 / 1000.0;
        }
        write_msg(&mut send, &TileReply::Done(task.seal(noise, 1, 1, None, &raw.key))).await.unwrap();
        expect_caught(ack(&mut raw.control.1, task.lease).await, "noise");

        // Fewer samples than asked, claimed as the full range.
        let (mut send, _recv, task) = raw.next_task().await;
        let lazy = honest_pixels(&task, &scene, (task.samples.count / 2).max(1));
        write_msg(&mut send, &TileReply::Done(task.seal(lazy, 1, 1, None, &raw.key))).await.unwrap();
        expect_caught(ack(&mut raw.control.1, task.lease).await, "half the samples");

        // 1 % of the pixels tampered (every 100th pixel a little brighter).
        let (mut send, _recv, task) = raw.next_task().await;
        let mut tampered = honest_pixels(&task, &scene, task.samples.count);
        let n = tampered.weight.len();
        for p in (0..n).step_by(100) {
            tampered.color[3 * p] *= 1.01;
            tampered.color[3 * p] += 1e-3;
        }
        write_msg(&mut send, &TileReply::Done(task.seal(tampered, 1, 1, None, &raw.key))).await.unwrap();
        // The third failed check quarantines the worker: it is disconnected
        // with the reason (before any ack), and refused when it comes back.
        let _ = task;
        let closed = tokio::time::timeout(Duration::from_secs(10), raw.conn.closed()).await.unwrap();
        assert!(format!("{closed:?}").contains("quarantined"), "{closed:?}");
        {
            let store = farm.store().lock().unwrap();
            let s = store.standing(&raw_identity).unwrap().unwrap();
            assert!(s.quarantined && s.trust == 0 && s.failed_checks == 3, "{s:?}");
            assert!((s.reputation - 0.5 / 8.0).abs() < 1e-9, "{s:?}");
        }
        let identity = tls::Identity::from_key(&raw.identity.key_der, "raw").unwrap();
        match raw_hello(&farm, &token, identity).await {
            Err(CoordinatorMsg::Refused { reason }) => assert!(reason.contains("quarantined"), "{reason}"),
            other => panic!("a quarantined worker was let in: {:?}", other.err()),
        }
        // An admin clears it; honest this time, it is accepted and credited.
        assert!(farm.store().lock().unwrap().clear_worker(&raw_identity).unwrap());
        let identity = tls::Identity::from_key(&raw.identity.key_der, "raw").unwrap();
        let mut raw = raw_connect_as(&farm, &token, identity).await;
        let (mut send, _recv, task) = raw.next_task().await;
        let honest = honest_pixels(&task, &scene, task.samples.count);
        write_msg(&mut send, &TileReply::Done(task.seal(honest, 1, 1, None, &raw.key))).await.unwrap();
        assert_eq!(ack(&mut raw.control.1, task.lease).await, TileAck::Accepted);
        let honest_tile = task.tile;
        let raw_key: String = raw.key.public_key().iter().map(|b| format!("{b:02x}")).collect();

        // A real worker finishes the job; the only tile the raw worker got
        // into the store is its honest one, and every stored tile carries
        // its proof record.
        drop(raw);
        let mut config = tessera_worker::client::WorkerConfig::new(
            farm.quic_addr().to_string(),
            token,
            farm.fingerprint(),
            dir.path().join("w"),
        );
        config.slots = 2;
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let worker = Worker::new(config).unwrap();
        tokio::spawn(async move { worker.run(stopped).await });
        let status = tokio::time::timeout(Duration::from_secs(180), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        let store = farm.store().lock().unwrap();
        let mut from_raw = Vec::new();
        for index in store.done_tiles(job).unwrap() {
            let tile = store.tile(job, index).unwrap().unwrap();
            let proof: serde_json::Value = serde_json::from_str(tile.proof.as_deref().unwrap()).unwrap();
            assert_eq!(proof["signature_checked"], true);
            assert!(proof["spot_check"]["pixels"].as_u64().unwrap() > 0, "{proof}");
            assert!(proof["spot_check"]["mismatch"].is_null(), "{proof}");
            if proof["public_key"] == raw_key.as_str() {
                from_raw.push(index);
            }
        }
        assert_eq!(from_raw, [honest_tile], "only the cheater's honest tile may be stored");
        let s = store.standing(&raw_identity).unwrap().unwrap();
        assert!(!s.quarantined && s.trust == 1 && s.verified_tiles == 1 && s.credit > 0.0, "{s:?}");
        // Every stored tile earned at least one ledger entry (two when a
        // second worker confirmed it), and the chain holds.
        let tiles = store.done_tiles(job).unwrap().len() as u64;
        let entries = store.verify_ledger().unwrap().unwrap();
        assert!(entries >= tiles, "{entries} ledger entries for {tiles} tiles");
        drop(store);
        farm.shutdown().await;
    });
}

#[test]
fn a_denoised_jobs_guides_are_required_and_spot_checked() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        // A made-up guide anywhere is caught.
        let farm = Farm::start(checking_every_pixel(&dir.path().join("coord"))).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let mut raw = raw_connect(&farm, &token).await;
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let mut request = request_with_spp(2);
        request.denoise = true;
        farm.submit_scene(request, scene.clone(), guest("pathtracer").to_vec()).await.unwrap();

        // Honest colour without the guides the job asked for: refused before any check.
        let (mut send, _recv, task) = raw.next_task().await;
        assert!(task.job.guides, "the job's descriptor asks for guides");
        let mut bare = honest_pixels(&task, &scene, task.samples.count);
        bare.aovs.clear();
        write_msg(&mut send, &TileReply::Done(task.seal(bare, 1, 1, None, &raw.key))).await.unwrap();
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => {
                assert!(reason.contains("a malformed tile") && reason.contains("albedo"), "{reason}")
            }
            TileAck::Accepted => panic!("a tile without guides was accepted"),
        }

        // Honest colour with a made-up albedo (flat grey): the spot check
        // compares the guides bit for bit too.
        let (mut send, _recv, task) = raw.next_task().await;
        let mut faked = honest_pixels(&task, &scene, task.samples.count);
        assert_eq!(faked.aovs.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), wire::GUIDE_AOVS);
        let weights = faked.weight.clone();
        for (i, v) in faked.aovs[0].data.iter_mut().enumerate() {
            *v = 0.5 * weights[i / 3];
        }
        write_msg(&mut send, &TileReply::Done(task.seal(faked, 1, 1, None, &raw.key))).await.unwrap();
        match ack(&mut raw.control.1, task.lease).await {
            TileAck::Rejected { reason } => assert!(reason.contains("spot check failed"), "{reason}"),
            TileAck::Accepted => panic!("made-up guides were accepted"),
        }

        // Honest colour and guides: accepted.
        let (mut send, _recv, task) = raw.next_task().await;
        let honest = honest_pixels(&task, &scene, task.samples.count);
        write_msg(&mut send, &TileReply::Done(task.seal(honest, 1, 1, None, &raw.key))).await.unwrap();
        assert_eq!(ack(&mut raw.control.1, task.lease).await, TileAck::Accepted);
        drop(raw);
        farm.shutdown().await;
    });
}

/// A hand-driven worker that answers every tile it gets with honest pixels
/// passed through `fake`, correctly signed, until it is disconnected or
/// given nothing for a while. Returns how many tiles it answered.
fn spawn_faker(
    raw: RawWorker,
    scene: Vec<u8>,
    fake: fn(&mut tessera_protocol::TileAccumulators),
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        // Own the whole worker (an async block would capture only the
        // fields it uses, and dropping the control stream ends the session).
        let raw = raw;
        let mut answered = 0;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(30), raw.conn.accept_bi()).await;
            let Ok(Ok((mut send, mut recv))) = next else { break };
            let Ok(task) = read_msg::<TileTask>(&mut recv, MAX_CONTROL_MESSAGE).await else { break };
            let (t, s) = (task.clone(), scene.clone());
            let mut faked = tokio::task::spawn_blocking(move || honest_pixels(&t, &s, t.samples.count)).await.unwrap();
            fake(&mut faked);
            let _ = write_msg(&mut send, &TileReply::Done(task.seal(faked, 1, 1, None, &raw.key))).await;
            answered += 1;
        }
        answered
    })
}

#[test]
fn a_new_workers_tiles_get_a_second_opinion_and_a_faked_pixel_never_reaches_a_frame() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    crate::farm::reference_render_spp(&reference, 4);
    rt.block_on(async {
        // Default spot checks (44 of a 16×16 tile's 256 pixels): one faked
        // pixel is found by sampling only now and then; replication finds it.
        let mut config = raw_worker_config(&dir.path().join("coord"));
        // The slow cheater's tiles must be judged, not overtaken by
        // speculative copies on the honest worker.
        config.scheduler.straggler_factor = 1000;
        let farm = Farm::start(config).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let raw = raw_connect(&farm, &token).await;
        let raw_key: String = raw.key.public_key().iter().map(|b| format!("{b:02x}")).collect();
        let raw_identity = tls::identity_of(&raw.identity.cert_der).unwrap();
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let job = farm.submit_scene(request_with_spp(4), scene.clone(), guest("pathtracer").to_vec()).await.unwrap();

        // The cheater answers every tile it gets with one pixel faked,
        // correctly signed, until it is quarantined or given nothing more.
        let cheater = spawn_faker(raw, scene.clone(), |faked| {
            let last = faked.weight.len() - 1;
            faked.color[3 * last] += 0.5;
        });
        // An honest worker joins once the cheater has work.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut wc = tessera_worker::client::WorkerConfig::new(
            farm.quic_addr().to_string(),
            token,
            farm.fingerprint(),
            dir.path().join("w"),
        );
        wc.slots = 2;
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let worker = Worker::new(wc).unwrap();
        tokio::spawn(async move { worker.run(stopped).await });
        let status = tokio::time::timeout(Duration::from_secs(240), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        let answered = cheater.await.unwrap();
        assert!(answered >= 1, "the cheater got no tile");

        let store = farm.store().lock().unwrap();
        for index in store.done_tiles(job).unwrap() {
            let tile = store.tile(job, index).unwrap().unwrap();
            let proof: serde_json::Value = serde_json::from_str(tile.proof.as_deref().unwrap()).unwrap();
            assert_ne!(proof["public_key"], raw_key.as_str(), "a faked tile {index} was stored");
        }
        let s = store.standing(&raw_identity).unwrap().unwrap();
        assert!(s.failed_checks >= 1 && s.verified_tiles == 0 && s.credit == 0.0, "{s:?}");
        assert!(store.verify_ledger().unwrap().is_ok());
        drop(store);
        crate::farm::assert_frames_equal(&farm.job_dir(job), &reference);
        farm.shutdown().await;
    });
}

#[test]
fn two_colluding_workers_with_the_same_wrong_tile_are_caught() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    crate::farm::reference_render_spp(&reference, 4);
    rt.block_on(async {
        // Replication cannot tell two colluders apart from two honest
        // workers (their bytes agree); spot checks on each result can.
        // Check (nearly) every pixel so the catch is certain here.
        let farm = Farm::start(checking_every_pixel(&dir.path().join("coord"))).await.unwrap();
        let token = farm.first_token().unwrap().to_string();
        let scene = std::fs::read(scenes().join("turntable.glb")).unwrap();
        let job = farm.submit_scene(request_with_spp(4), scene.clone(), guest("pathtracer").to_vec()).await.unwrap();
        let mut colluders = Vec::new();
        let mut keys = Vec::new();
        for _ in 0..2 {
            let raw = raw_connect(&farm, &token).await;
            keys.push(raw.key.public_key().iter().map(|b| format!("{b:02x}")).collect::<String>());
            // Both fake the same pixels the same way.
            colluders.push(spawn_faker(raw, scene.clone(), |faked| {
                for p in (0..faked.weight.len()).step_by(50) {
                    faked.color[3 * p] = 0.25;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut wc = tessera_worker::client::WorkerConfig::new(
            farm.quic_addr().to_string(),
            token,
            farm.fingerprint(),
            dir.path().join("w"),
        );
        wc.slots = 2;
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let worker = Worker::new(wc).unwrap();
        tokio::spawn(async move { worker.run(stopped).await });
        let status = tokio::time::timeout(Duration::from_secs(240), farm.wait_job(job)).await.unwrap().unwrap();
        assert_eq!(status.state, JobState::Done, "{status:?}");
        for c in colluders {
            assert!(c.await.unwrap() >= 1, "a colluder got no tile");
        }
        let store = farm.store().lock().unwrap();
        for index in store.done_tiles(job).unwrap() {
            let tile = store.tile(job, index).unwrap().unwrap();
            let proof: serde_json::Value = serde_json::from_str(tile.proof.as_deref().unwrap()).unwrap();
            assert!(!keys.iter().any(|k| proof["public_key"] == k.as_str()), "a colluder's tile {index} was stored");
        }
        drop(store);
        crate::farm::assert_frames_equal(&farm.job_dir(job), &reference);
        farm.shutdown().await;
    });
}

/// Accepts any server certificate: the client side of a connection that
/// offers no certificate of its own (the server is what is tested).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The QUIC side of the auth matrix: a connection without a client
/// certificate, a hello without a token, with a wrong one, with a token of
/// the wrong kind (an API token, even an admin one) or a revoked one, and a
/// blob request before any hello are all refused; a worker whose token is
/// revoked while it is connected is disconnected; only a live join token
/// is welcomed.
#[test]
fn every_quic_opening_wants_a_certificate_and_a_live_join_token() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut config = test_config(&dir.path().join("coord"));
        config.heartbeat = Duration::from_millis(200);
        let farm = Farm::start(config).await.unwrap();
        let good = farm.first_token().unwrap().to_string();

        // No client certificate: the handshake itself fails.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_no_client_auth();
        tls.alpn_protocols = vec![wire::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            let conn = endpoint.connect(farm.quic_addr(), "tessera").unwrap().await.map_err(|e| e.to_string())?;
            // The client may finish its side of the handshake first; the
            // server's refusal then ends the connection before any stream works.
            let (mut tx, mut rx) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let _ = write_msg(&mut tx, &WorkerOpen::Blob { hash: tessera_protocol::ContentHash([0; 32]) }).await;
            read_msg::<CoordinatorMsg>(&mut rx, MAX_CONTROL_MESSAGE).await.map_err(|e| e.to_string())
        })
        .await
        .expect("the coordinator answers a certificate-less client at once");
        assert!(outcome.is_err(), "a client without a certificate got an answer: {outcome:?}");

        // Hellos with bad credentials.
        let api = farm.create_token(TokenKind::Api, "admin api").await.unwrap();
        let revoked = farm.create_token(TokenKind::Worker, "revoked").await.unwrap();
        let id = farm.store().lock().unwrap().check_token(TokenKind::Worker, &revoked).unwrap().unwrap();
        farm.store().lock().unwrap().revoke_token(id).unwrap();
        for (what, token) in [
            ("no token", String::new()),
            ("a wrong token", "tw_0123456789abcdef0123456789abcdef".to_string()),
            ("an API token", api.clone()),
            ("a revoked token", revoked.clone()),
            ("a very long token", "x".repeat(60_000)),
        ] {
            match raw_hello(&farm, &token, tls::Identity::generate("bad").unwrap()).await {
                Err(CoordinatorMsg::Refused { reason }) => {
                    assert!(reason.contains("unknown or revoked join token"), "{what}: {reason}")
                }
                Err(other) => panic!("{what}: {other:?}"),
                Ok(_) => panic!("{what} was welcomed"),
            }
        }

        // A blob request before the hello.
        let identity = tls::Identity::generate("eager").unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(
            tls::client_config(&identity, farm.fingerprint(), transport(Duration::from_secs(5), 64)).unwrap(),
        );
        let conn = endpoint.connect(farm.quic_addr(), "tessera").unwrap().await.unwrap();
        let (mut tx, mut rx) = conn.open_bi().await.unwrap();
        write_msg(&mut tx, &WorkerOpen::Blob { hash: tessera_protocol::ContentHash([0; 32]) }).await.unwrap();
        match read_msg::<CoordinatorMsg>(&mut rx, MAX_CONTROL_MESSAGE).await.unwrap() {
            CoordinatorMsg::Refused { reason } => assert!(reason.contains("say hello first"), "{reason}"),
            other => panic!("{other:?}"),
        }

        // A live token is welcomed; revoked while connected, it is cut off
        // at a later heartbeat's check.
        let token = farm.create_token(TokenKind::Worker, "short-lived").await.unwrap();
        let mut raw = raw_hello(&farm, &token, tls::Identity::generate("ok").unwrap()).await.expect("welcomed");
        let id = farm.store().lock().unwrap().check_token(TokenKind::Worker, &token).unwrap().unwrap();
        farm.store().lock().unwrap().revoke_token(id).unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if write_msg(&mut raw.control.0, &wire::WorkerMsg::Heartbeat).await.is_err() {
                    break;
                }
                if raw.conn.close_reason().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(closed.is_ok(), "a worker whose token was revoked stayed connected");
        assert!(
            farm.status().await.unwrap().workers.is_empty() || {
                tokio::time::sleep(Duration::from_secs(1)).await;
                farm.status().await.unwrap().workers.is_empty()
            }
        );
        drop(good);
        farm.shutdown().await;
    });
}
