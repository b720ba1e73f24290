//! The leader lease and fencing on a real PostgreSQL database: a
//! coordinator that lost its lease cannot write, whatever it believes,
//! because the database refuses it.

use std::time::Duration;

use tessera_store::{Backend, JobState, JobStore, MetaStore, NewJob, StoreError};
use tessera_store_postgres::PgBackend;
use tessera_test_support::postgres::Cluster;

fn database() -> String {
    Cluster::shared().unwrap_or_else(|e| panic!("no PostgreSQL for the fencing tests: {e}")).fresh_database()
}

fn job() -> NewJob {
    NewJob { name: "shot".into(), spec_json: "{}".into(), priority: 0, tiles: 1, frames: vec![1] }
}

#[test]
fn a_deposed_leaders_writes_are_refused_by_the_database() {
    let url = database();
    let mut a = PgBackend::connect(&url).unwrap();
    let mut b = PgBackend::connect(&url).unwrap();

    // Nobody leads yet: a connection without a term reads, and cannot write.
    assert_eq!(a.jobs().unwrap(), vec![]);
    let err = a.insert_job(&job(), 1).unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert!(err.to_string().contains("term none"), "{err}");

    // A leads (term 1) and writes; B must wait while A's lease is live.
    let lease = a.lead("coordinator-a", 400).unwrap().expect("a free lease");
    assert_eq!(lease.term, 1);
    let id = a.insert_job(&job(), 1).unwrap();
    assert!(b.lead("coordinator-b", 400).unwrap().is_none(), "A's lease is live");
    assert!(a.renew("coordinator-a", 400).unwrap());
    let state = b.lease_state().unwrap();
    assert!(state.live() && state.holder == "coordinator-a" && state.term == 1, "{state:?}");

    // A stops renewing (cut off, paused); its lease expires and B takes over.
    std::thread::sleep(Duration::from_millis(600));
    let lease = b.lead("coordinator-b", 60_000).unwrap().expect("A's lease expired");
    assert_eq!(lease.term, 2);

    // A comes back believing it leads: every write is refused, by the
    // database, and its renewal fails; its reads still work.
    let err = a.set_job_state(id, JobState::Running, None, 2).unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert!(err.to_string().contains("term 1") && err.to_string().contains("term 2"), "{err}");
    assert!(matches!(a.set_meta("k", b"stale").unwrap_err(), StoreError::Fenced(_)));
    assert!(matches!(a.insert_job(&job(), 2).unwrap_err(), StoreError::Fenced(_)));
    assert!(!a.renew("coordinator-a", 400).unwrap());
    assert_eq!(a.job(id).unwrap().unwrap().state, JobState::Queued, "A's late write did not land");
    assert_eq!(a.meta("k").unwrap(), None);

    // B writes; a second connection of B's (`reconnect`) writes under the
    // same term; A can lead again only once B's lease is gone.
    b.set_job_state(id, JobState::Running, None, 3).unwrap();
    let mut b2 = b.reconnect().unwrap();
    b2.set_meta("k", b"fresh").unwrap();
    assert_eq!(a.meta("k").unwrap().as_deref(), Some(&b"fresh"[..]));
    assert!(a.lead("coordinator-a", 400).unwrap().is_none(), "B's lease is live");
}

#[test]
fn a_restarted_coordinator_fences_its_own_earlier_connections() {
    let url = database();
    let mut before = PgBackend::connect(&url).unwrap();
    before.lead("coordinator-a", 60_000).unwrap().unwrap();
    before.insert_job(&job(), 1).unwrap();
    // The same coordinator starts again (a crash and restart): a new term,
    // so anything the old process still had in flight is refused.
    let mut after = PgBackend::connect(&url).unwrap();
    let lease = after.lead("coordinator-a", 60_000).unwrap().expect("its own lease");
    assert_eq!(lease.term, 2);
    assert!(matches!(before.insert_job(&job(), 2).unwrap_err(), StoreError::Fenced(_)));
    after.insert_job(&job(), 2).unwrap();
    assert_eq!(after.jobs().unwrap().len(), 2);
}

/// A leader whose network to the database is cut (a relay that holds every
/// byte, as a partition does): its lease lapses, another coordinator takes
/// over, and the write it sent into the cut arrives after the takeover and
/// is refused. Once the network heals it rejoins as a standby: it reads
/// the new leader's writes and cannot take the lease while that one lives.
#[test]
fn a_leader_cut_off_from_the_database_is_fenced_and_rejoins_as_a_standby() {
    use tessera_test_support::relay::Relay;
    let cluster = Cluster::shared().unwrap_or_else(|e| panic!("no PostgreSQL for the fencing tests: {e}"));
    let url = cluster.fresh_database();
    let relay = Relay::start(([127, 0, 0, 1], cluster.port).into()).unwrap();
    let cut_url = relay.postgres_url(&url, cluster.port);

    let mut a = PgBackend::connect(&cut_url).unwrap();
    assert_eq!(a.lead("coordinator-a", 500).unwrap().expect("a free lease").term, 1);
    let id = a.insert_job(&job(), 1).unwrap();

    relay.cut();
    // A decides something while cut off: its write goes into the cut.
    let late = std::thread::spawn(move || {
        let result = a.set_job_state(id, JobState::Failed, Some("decided while cut off"), 2);
        (a, result)
    });
    let mut b = PgBackend::connect(&url).unwrap();
    let started = std::time::Instant::now();
    let lease = loop {
        if let Some(l) = b.lead("coordinator-b", 60_000).unwrap() {
            break l;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "A's lease never lapsed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lease.term, 2);
    b.set_job_state(id, JobState::Running, None, 3).unwrap();
    assert!(!late.is_finished(), "A's write is held in the cut");

    relay.heal();
    let (mut a, result) = late.join().unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "the late write must be refused, not applied: {err}");
    let job_now = b.job(id).unwrap().unwrap();
    assert_eq!((job_now.state, job_now.error), (JobState::Running, None), "B's decision stands");

    // A rejoins: it reads B's state and stands by.
    assert!(!a.renew("coordinator-a", 500).unwrap(), "A knows it lost the lease");
    assert!(a.lead("coordinator-a", 500).unwrap().is_none(), "B's lease is live");
    assert_eq!(a.lease_state().unwrap().holder, "coordinator-b");
    assert_eq!(a.job(id).unwrap().unwrap().state, JobState::Running);
}

/// The API's reader connections (`reconnect_reader`) read what the leader
/// wrote and cannot write themselves. And a backend dropped on one of
/// tokio's threads (the coordinator's last task holding the store, at
/// shutdown) closes quietly: the synchronous client's drop would start a
/// runtime of its own there and panic.
#[test]
fn readers_cannot_write_and_a_backend_drops_quietly_on_a_runtime_thread() {
    let url = database();
    let mut leader = PgBackend::connect(&url).unwrap();
    leader.lead("coordinator-a", 60_000).unwrap().expect("a free lease");
    let id = leader.insert_job(&job(), 1).unwrap();
    let mut reader = leader.reconnect_reader().unwrap();
    assert_eq!(reader.job(id).unwrap().unwrap().name, "shot");
    assert!(matches!(reader.set_meta("k", b"v").unwrap_err(), StoreError::Fenced(_)));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async move {
        tokio::spawn(async move {
            drop(reader);
            drop(leader);
        })
        .await
        .expect("dropped without a panic");
    });
}
