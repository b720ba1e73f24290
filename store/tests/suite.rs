//! The store's suite, on every backend: data surviving a reopen,
//! idempotent tile recording, tokens, logs, retries and deletion run on
//! real SQLite files and on a real PostgreSQL database (a throw-away
//! cluster, `tessera_test_support::postgres`); durability settings, blob
//! files and refused databases are SQLite's own tests below.

use std::fs;
use std::path::Path;

use tessera_store::*;
use tessera_store_postgres::PgBackend;
use tessera_test_support::postgres::Cluster;

/// How a test opens its store (again) on the data directory `dir`.
trait Open {
    fn open(&self, dir: &Path) -> Store;
    /// Whether the store's data at rest holds `needle`: SQLite's files in
    /// `dir`, or a dump of the PostgreSQL database (binary as hex).
    fn at_rest_contains(&self, dir: &Path, needle: &[u8]) -> bool;
}

struct Sqlite;

impl Open for Sqlite {
    fn open(&self, dir: &Path) -> Store {
        Store::open(dir).unwrap()
    }

    fn at_rest_contains(&self, dir: &Path, needle: &[u8]) -> bool {
        files_contain(dir, needle)
    }
}

/// The test's own database on the shared cluster; blobs in `dir`.
struct Postgres {
    cluster: &'static Cluster,
    url: String,
}

fn postgres() -> Postgres {
    let cluster = Cluster::shared().unwrap_or_else(|e| panic!("no PostgreSQL for the store's suite: {e}"));
    Postgres { cluster, url: cluster.fresh_database() }
}

impl Open for Postgres {
    fn open(&self, dir: &Path) -> Store {
        let mut backend = PgBackend::connect(&self.url).unwrap();
        backend.lead("suite", 60_000).unwrap().expect("the test's database has no other leader");
        Store::with_backend(dir, Box::new(backend)).unwrap()
    }

    fn at_rest_contains(&self, _dir: &Path, needle: &[u8]) -> bool {
        let db = self.url.rsplit('/').next().unwrap();
        let out = self
            .cluster
            .program("pg_dump")
            .args(["-h", "127.0.0.1", "-p", &self.cluster.port.to_string(), "-U", "tessera", "--data-only", db])
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
        let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
        contains(&out.stdout, needle) || contains(&out.stdout, hex.as_bytes())
    }
}

/// Each test of the list, once on SQLite and once on PostgreSQL.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(&super::Sqlite) })*
        }
        mod postgresql {
            $(#[test] fn $name() { super::$name(&super::postgres()) })*
        }
    };
}

on_every_backend!(
    store_credit_trust_and_quarantine_keep_one_ledger_chain,
    store_data_survives_reopen,
    store_record_tiles_is_idempotent,
    store_tiles_of_an_unknown_job_fail_the_whole_batch,
    store_unfinished_jobs_are_queued_or_running,
    store_workers_keep_first_seen,
    store_tokens_check_kind_revocation_and_secret,
    store_token_scopes_round_trip,
    store_job_log_reads_after_a_cursor,
    store_reset_job_only_retries_failed_or_cancelled_jobs,
    store_delete_job_removes_rows_and_unshared_blobs,
);

fn job(name: &str, frames: Vec<i32>) -> NewJob {
    NewJob { name: name.into(), spec_json: r#"{"samples":16}"#.into(), priority: 3, tiles: 4, frames }
}

fn tile(job: u64, index: u32, worker: &str) -> TileRecord {
    TileRecord {
        job,
        index,
        frame: 1 + (index / 4) as i32,
        hash: [index as u8; 32],
        data: vec![index as u8; 4096 + index as usize],
        worker: worker.into(),
        fuel: 1_000 + u64::from(index),
        millis: 20,
        proof: Some(format!("{{\"tile\":{index}}}")),
        credit: None,
        also_credit: None,
    }
}

#[test]
fn store_is_send() {
    fn send<T: Send>() {}
    send::<Store>();
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<Blobs>();
}

#[test]
fn store_opens_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    assert_eq!(store.data_dir(), dir.path().join("data"));
    let backend = tessera_store::sqlite::SqliteBackend::open(&dir.path().join("data")).unwrap();
    assert_eq!(backend.journal_mode().unwrap(), "wal");
    assert!(dir.path().join("data/blobs").is_dir());

    // WAL is a property of the file: a second, plain connection sees it.
    let other = rusqlite::Connection::open(dir.path().join("data").join(DB_FILE)).unwrap();
    let mode: String = other.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = other.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, tessera_store::schema::VERSION);
}

fn store_data_survives_reopen(db: &dyn Open) {
    let dir = tempfile::tempdir().unwrap();
    let (job_id, token, blob) = {
        let mut store = db.open(dir.path());
        let id = store.insert_job(&job("shot-010", vec![1, 2]), 1_000).unwrap();
        store.set_job_state(id, JobState::Running, None, 1_500).unwrap();
        store.upsert_worker("fp-a", "render-01", r#"{"slots":8}"#, 1_100).unwrap();
        assert_eq!(store.record_tiles(&[tile(id, 0, "fp-a"), tile(id, 5, "fp-a")]).unwrap(), 2);
        store
            .record_frame(&FrameRecord {
                job: id,
                frame: 1,
                exr: Some([1; 32]),
                png: Some([2; 32]),
                thumbnail: [3; 32],
                finished_ms: 2_000,
                denoised_exr: Some([4; 32]),
                denoised_png: None,
            })
            .unwrap();
        let (_, secret) = store.create_token(TokenKind::Worker, "farm room", 1_200).unwrap();
        store.set_meta("certificate", b"-----BEGIN CERTIFICATE-----").unwrap();
        let blob = store.put_blob(b"scene bytes").unwrap();
        (id, secret, blob)
    };

    let store = db.open(dir.path());
    let jobs = store.jobs().unwrap();
    assert_eq!(
        jobs,
        vec![JobRecord {
            id: job_id,
            name: "shot-010".into(),
            spec_json: r#"{"samples":16}"#.into(),
            priority: 3,
            tiles: 4,
            frames: vec![1, 2],
            state: JobState::Running,
            error: None,
            created_ms: 1_000,
            finished_ms: None,
        }]
    );
    assert_eq!(store.job(job_id).unwrap().as_ref(), jobs.first());
    assert_eq!(store.done_tiles(job_id).unwrap(), vec![0, 5]);
    assert_eq!(store.tile(job_id, 5).unwrap(), Some(tile(job_id, 5, "fp-a")));
    assert_eq!(store.frame_tiles(job_id, 2).unwrap(), vec![tile(job_id, 5, "fp-a")]);
    let frames = store.frames(job_id).unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].frame, frames[0].png, frames[0].finished_ms), (1, Some([2; 32]), 2_000));
    let workers = store.workers().unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].tiles_done, 2);
    assert!(store.check_token(TokenKind::Worker, &token).unwrap().is_some());
    assert_eq!(store.tokens().unwrap().len(), 1);
    assert_eq!(store.meta("certificate").unwrap().as_deref(), Some(&b"-----BEGIN CERTIFICATE-----"[..]));
    assert_eq!(store.meta("absent").unwrap(), None);
    assert_eq!(store.get_blob(&blob).unwrap(), b"scene bytes");
}

fn store_record_tiles_is_idempotent(db: &dyn Open) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = db.open(dir.path());
    let id = store.insert_job(&job("a", vec![1, 2, 3]), 0).unwrap();
    let other = store.insert_job(&job("b", vec![1]), 0).unwrap();
    store.upsert_worker("fp-a", "a", "{}", 10).unwrap();
    store.upsert_worker("fp-b", "b", "{}", 10).unwrap();

    // A duplicate inside one batch: the first one wins, counted once.
    let mut twin = tile(id, 7, "fp-b");
    twin.data = vec![0xee; 16];
    let batch = [tile(id, 7, "fp-a"), tile(id, 2, "fp-a"), twin.clone(), tile(id, 9, "fp-b")];
    assert_eq!(store.record_tiles(&batch).unwrap(), 3);
    // The same tiles again, and a twin's late result, add nothing.
    assert_eq!(store.record_tiles(&batch).unwrap(), 0);
    assert_eq!(store.record_tiles(&[twin, tile(id, 0, "fp-b"), tile(other, 7, "fp-b")]).unwrap(), 2);
    assert_eq!(store.record_tiles(&[]).unwrap(), 0);

    assert_eq!(store.done_tiles(id).unwrap(), vec![0, 2, 7, 9]);
    assert_eq!(store.tile_count(id).unwrap(), 4);
    assert_eq!(store.done_tiles(other).unwrap(), vec![7]);
    assert_eq!(store.tile(id, 7).unwrap(), Some(tile(id, 7, "fp-a")));
    assert_eq!(store.tile(id, 8).unwrap(), None);
    let frame3: Vec<u32> = store.frame_tiles(id, 3).unwrap().iter().map(|t| t.index).collect();
    assert_eq!(frame3, vec![9]);

    // Only new tiles are credited; an unknown worker's are stored, uncredited.
    assert_eq!(store.record_tiles(&[tile(id, 11, "fp-unknown")]).unwrap(), 1);
    let done: Vec<(String, u64)> = store.workers().unwrap().into_iter().map(|w| (w.identity, w.tiles_done)).collect();
    assert_eq!(done, vec![("fp-a".into(), 2), ("fp-b".into(), 3)]);
}

fn store_tiles_of_an_unknown_job_fail_the_whole_batch(db: &dyn Open) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = db.open(dir.path());
    let id = store.insert_job(&job("a", vec![1]), 0).unwrap();
    let err = store.record_tiles(&[tile(id, 0, "w"), tile(id + 1, 0, "w")]).unwrap_err();
    // The database refused it (SQLite's or PostgreSQL's foreign key).
    assert!(matches!(err, StoreError::Sqlite(_) | StoreError::Database(_)), "{err}");
    assert!(err.to_string().to_lowercase().contains("foreign key"), "{err}");
    assert_eq!(store.tile_count(id).unwrap(), 0);
    let mut huge = tile(id, 1, "w");
    huge.fuel = u64::MAX;
    assert!(matches!(store.record_tiles(&[huge]).unwrap_err(), StoreError::OutOfRange { .. }));
}

fn store_unfinished_jobs_are_queued_or_running(db: &dyn Open) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = db.open(dir.path());
    let ids: Vec<u64> = (0..5).map(|i| store.insert_job(&job(&format!("j{i}"), vec![i]), 100).unwrap()).collect();
    store.set_job_state(ids[1], JobState::Done, None, 200).unwrap();
    store.set_job_state(ids[2], JobState::Failed, Some("guest trapped"), 300).unwrap();
    store.set_job_state(ids[3], JobState::Cancelled, None, 400).unwrap();
    store.set_job_state(ids[4], JobState::Running, None, 500).unwrap();

    let unfinished: Vec<u64> = store.unfinished_jobs().unwrap().iter().map(|j| j.id).collect();
    assert_eq!(unfinished, vec![ids[0], ids[4]]);
    let failed = store.job(ids[2]).unwrap().unwrap();
    assert_eq!(
        (failed.state, failed.error.as_deref(), failed.finished_ms),
        (JobState::Failed, Some("guest trapped"), Some(300))
    );
    assert!(failed.state.is_finished() && !JobState::Running.is_finished());
    assert_eq!(store.job(ids[4]).unwrap().unwrap().finished_ms, None);
    // Newest first.
    let newest_first: Vec<u64> = ids.iter().rev().copied().collect();
    assert_eq!(store.jobs().unwrap().iter().map(|j| j.id).collect::<Vec<_>>(), newest_first);
    let states: Vec<(u64, JobState)> = store.jobs().unwrap().iter().map(|j| (j.id, j.state)).collect();
    assert_eq!(store.job_states().unwrap(), states);

    assert!(matches!(store.set_job_state(9_999, JobState::Done, None, 0), Err(StoreError::NotFound(_))));
    assert_eq!(store.job(9_999).unwrap(), None);
    assert_eq!(store.job(u64::MAX).unwrap(), None);
}

fn store_workers_keep_first_seen(db: &dyn Open) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = db.open(dir.path());
    store.upsert_worker("fp-a", "old name", r#"{"slots":4}"#, 100).unwrap();
    store.upsert_worker("fp-a", "new name", r#"{"slots":8}"#, 900).unwrap();
    store.upsert_worker("fp-a", "new name", r#"{"slots":8}"#, 500).unwrap();
    assert_eq!(
        store.workers().unwrap(),
        vec![WorkerRecord {
            identity: "fp-a".into(),
            name: "new name".into(),
            capabilities_json: r#"{"slots":8}"#.into(),
            first_seen_ms: 100,
            last_seen_ms: 900,
            tiles_done: 0,
        }]
    );
}

fn store_tokens_check_kind_revocation_and_secret(db: &dyn Open) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = db.open(dir.path());
    let (worker_id, worker_secret) = store.create_token(TokenKind::Worker, "render room", 1).unwrap();
    let (api_id, api_secret) = store.create_token(TokenKind::Api, "pipeline", 2).unwrap();
    assert!(worker_secret.starts_with("tw_") && api_secret.starts_with("ta_"));
    assert_eq!(worker_secret.len(), 3 + 64);
    assert!(worker_secret[3..].chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_ne!(worker_secret[3..], api_secret[3..]);

    assert_eq!(store.check_token(TokenKind::Worker, &worker_secret).unwrap(), Some(worker_id));
    assert_eq!(store.check_token(TokenKind::Api, &api_secret).unwrap(), Some(api_id));
    // Wrong kind, a made-up secret, a near miss.
    assert_eq!(store.check_token(TokenKind::Api, &worker_secret).unwrap(), None);
    assert_eq!(store.check_token(TokenKind::Worker, &format!("tw_{}", "0".repeat(64))).unwrap(), None);
    let mut near = worker_secret.clone();
    near.pop();
    near.push(if worker_secret.ends_with('0') { '1' } else { '0' });
    assert_eq!(store.check_token(TokenKind::Worker, &near).unwrap(), None);
    assert_eq!(store.check_token(TokenKind::Worker, "").unwrap(), None);

    assert!(store.revoke_token(worker_id).unwrap());
    assert!(!store.revoke_token(worker_id).unwrap());
    assert!(!store.revoke_token(9_999).unwrap());
    assert_eq!(store.check_token(TokenKind::Worker, &worker_secret).unwrap(), None);
    assert_eq!(store.check_token(TokenKind::Api, &api_secret).unwrap(), Some(api_id));
    assert_eq!(
        store.tokens().unwrap(),
        vec![
            TokenRecord {
                id: worker_id,
                kind: TokenKind::Worker,
                label: "render room".into(),
                created_ms: 1,
                revoked: true,
                scopes: vec![],
            },
            TokenRecord {
                id: api_id,
                kind: TokenKind::Api,
                label: "pipeline".into(),
                created_ms: 2,
                revoked: false,
                scopes: vec![Scope::Admin],
            },
        ]
    );

    // No secret (nor its hex part) is in the database's files: neither in
    // the WAL while the store is open, nor in the database after the close
    // checkpointed it. Their hashes are (which shows the scan reads the
    // right files).
    let secrets = [&worker_secret[..], &worker_secret[3..], &api_secret[..], &api_secret[3..]];
    let worker_hash = *blake3::hash(worker_secret.as_bytes()).as_bytes();
    let check = |when: &str| {
        for secret in secrets {
            assert!(!db.at_rest_contains(dir.path(), secret.as_bytes()), "a secret is on disk {when}");
        }
        assert!(db.at_rest_contains(dir.path(), &worker_hash), "the hash is not on disk {when}");
    };
    check("while the store is open");
    drop(store);
    check("after the store closed");
}

/// Whether any file directly in `dir` contains `needle`.
fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .any(|p| contains(&fs::read(p).unwrap(), needle))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn store_blobs_round_trip_and_detect_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = b"glTF\x02\x00\x00\x00 a scene".to_vec();
    let hash = store.put_blob(&bytes).unwrap();
    assert_eq!(hash, *blake3::hash(&bytes).as_bytes());
    assert_eq!(store.put_blob(&bytes).unwrap(), hash, "putting twice is harmless");
    assert!(store.has_blob(&hash).unwrap());
    assert_eq!(store.get_blob(&hash).unwrap(), bytes);
    let hex = blake3::Hash::from_bytes(hash).to_hex().to_string();
    assert_eq!(store.blob_path(&hash), dir.path().join("blobs").join(&hex[..2]).join(&hex));
    assert_eq!(store.put_blob(b"").map(|h| store.get_blob(&h).unwrap()).unwrap(), b"");

    // No temporary files are left next to the blob.
    let siblings: Vec<_> = fs::read_dir(dir.path().join("blobs").join(&hex[..2])).unwrap().collect();
    assert_eq!(siblings.len(), 1);

    // Flip one byte on disk: reading names the blob and the file.
    let path = store.blob_path(&hash);
    let mut altered = fs::read(&path).unwrap();
    altered[0] ^= 1;
    fs::write(&path, &altered).unwrap();
    match store.get_blob(&hash) {
        Err(err @ StoreError::Corrupt { .. }) => {
            let msg = err.to_string();
            assert!(msg.contains(&hex) && msg.contains(&path.display().to_string()), "{msg}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A file of the right length is trusted by put (it does not reread it);
    // one of the wrong length (truncated) is replaced.
    store.put_blob(&bytes).unwrap();
    assert!(matches!(store.get_blob(&hash), Err(StoreError::Corrupt { .. })));
    fs::write(&path, &altered[..3]).unwrap();
    store.put_blob(&bytes).unwrap();
    assert_eq!(store.get_blob(&hash).unwrap(), bytes);

    let missing = [7u8; 32];
    assert!(!store.has_blob(&missing).unwrap());
    assert!(matches!(store.get_blob(&missing), Err(StoreError::NotFound(_))));
}

/// Two coordinators on one PostgreSQL database, each with a data directory
/// of its own: a blob one stores, the other reads (checked, and then kept
/// locally), in chunks when it is large; a damaged local copy is replaced
/// by the shared one; a removal reaches both.
#[test]
fn postgres_blobs_reach_every_coordinator_without_a_shared_directory() {
    let db = postgres();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = db.open(dir_a.path());
    let b = Store::with_backend(dir_b.path(), Box::new(PgBackend::connect(&db.url).unwrap())).unwrap();
    assert!(a.blobs().is_shared() && b.blobs().is_shared());

    // 2.5 chunks, with a pattern that shows any reordering.
    let big: Vec<u8> = (0..(5 << 19) as u32).map(|i| (i % 251) as u8 ^ (i >> 20) as u8).collect();
    let hash = a.put_blob(&big).unwrap();
    let small = a.put_blob(b"a thumbnail").unwrap();
    assert!(!b.blob_path(&hash).exists(), "nothing is copied to other coordinators' directories");
    assert!(b.has_blob(&hash).unwrap());
    assert_eq!(b.blob_len(&hash).unwrap(), Some(big.len() as u64));
    assert_eq!(b.get_blob(&hash).unwrap(), big);
    assert_eq!(fs::read(b.blob_path(&hash)).unwrap(), big, "read once, kept locally");
    assert_eq!(fs::read(b.blobs().local_path(&small).unwrap()).unwrap(), b"a thumbnail");

    // A damaged local copy is replaced by the shared one.
    fs::write(b.blob_path(&small), b"a thumbnaiL").unwrap();
    assert_eq!(b.get_blob(&small).unwrap(), b"a thumbnail");
    assert_eq!(fs::read(b.blob_path(&small)).unwrap(), b"a thumbnail");

    // Storing the same bytes again, from either, is harmless.
    assert_eq!(b.put_blob(&big).unwrap(), hash);

    // A removal on one reaches the other: its cached file no longer counts.
    assert!(a.blobs().remove(&small).unwrap());
    assert!(!b.has_blob(&small).unwrap());
    let missing = [3u8; 32];
    assert!(matches!(b.blobs().local_path(&missing), Err(StoreError::NotFound(_))));
    assert_eq!(b.blob_len(&missing).unwrap(), None);
}

/// The same group commits of credited tiles (several workers, CPU and GPU
/// credits, a tile twice in a batch, a second opinion's credit) leave the
/// same standing, to the bit, and the same ledger on both backends: the
/// PostgreSQL backend batches its statements but computes as SQLite does.
#[test]
fn postgres_and_sqlite_credit_the_same_bits() {
    let db = postgres();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut stores = [Sqlite.open(dir_a.path()), db.open(dir_b.path())];
    let credit = |c: f64, gpu: bool, i: u32| TileCredit { credit: c, gpu, commitment: [i as u8; 32], time_ms: 7 };
    for store in &mut stores {
        for w in ["w1", "w2", "w3"] {
            store.upsert_worker(w, w, "{}", 1).unwrap();
        }
        let job = store.insert_job(&job("credits", vec![1, 2, 3]), 1).unwrap();
        for batch in 0..5u32 {
            let mut tiles = Vec::new();
            for i in 0..7u32 {
                let index = batch * 7 + i;
                let mut t = tile(job, index, ["w1", "w2", "w3", "ghost"][(index % 4) as usize]);
                t.credit = Some(credit(0.1 * f64::from(index) + 1.0 / 3.0, index % 5 == 0, index));
                if index % 3 == 0 {
                    t.also_credit = Some(("w3".into(), credit(0.7, false, index)));
                }
                tiles.push(t);
            }
            // The same tile again in the batch: only its first result counts.
            tiles.push(TileRecord { worker: "w2".into(), ..tiles[0].clone() });
            assert_eq!(store.record_tiles(&tiles).unwrap(), 7);
        }
    }
    for w in ["w1", "w2", "w3"] {
        let (a, b) = (stores[0].standing(w).unwrap().unwrap(), stores[1].standing(w).unwrap().unwrap());
        assert_eq!((a.reputation.to_bits(), a.credit.to_bits()), (b.reputation.to_bits(), b.credit.to_bits()), "{w}");
        assert_eq!(a, b, "{w}");
    }
    assert_eq!(stores[0].workers().unwrap(), stores[1].workers().unwrap());
    assert_eq!(stores[0].ledger(None, 0, 1000).unwrap(), stores[1].ledger(None, 0, 1000).unwrap());
    assert_eq!(stores[1].verify_ledger().unwrap(), Ok(stores[0].verify_ledger().unwrap().unwrap()));
}

#[test]
fn store_reopen_removes_interrupted_blob_writes() {
    let dir = tempfile::tempdir().unwrap();
    let hash = Store::open(dir.path()).unwrap().put_blob(b"frame").unwrap();
    let sub = Store::open(dir.path()).unwrap().blob_path(&hash).parent().unwrap().to_owned();
    fs::write(sub.join(".tmp-crashed"), b"half a blo").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(!sub.join(".tmp-crashed").exists());
    assert_eq!(store.get_blob(&hash).unwrap(), b"frame");
}

#[test]
fn store_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let newer = tessera_store::schema::VERSION + 1;
    conn.pragma_update(None, "user_version", newer).unwrap();
    drop(conn);
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported, .. } if found == newer && supported == newer - 1),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&format!("schema version {newer} is newer")) && msg.contains(DB_FILE), "{msg}");
}

#[test]
fn store_refuses_a_foreign_database() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY)").unwrap();
    drop(conn);
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
}

fn store_token_scopes_round_trip(db: &dyn Open) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = db.open(dir.path());
    // Unsorted with a duplicate: kept sorted and once.
    let (read_submit, rs_secret) =
        store.create_token_scoped(TokenKind::Api, "pipeline", &[Scope::Submit, Scope::Read, Scope::Submit], 1).unwrap();
    let (upload, upload_secret) = store.create_token_scoped(TokenKind::Api, "button", &[Scope::Submit], 2).unwrap();
    let (_, admin_secret) = store.create_token(TokenKind::Api, "first", 3).unwrap();
    let (_, worker_secret) = store.create_token(TokenKind::Worker, "room", 4).unwrap();
    assert!(matches!(
        store.create_token_scoped(TokenKind::Worker, "w", &[Scope::Read], 5),
        Err(StoreError::Invalid(_))
    ));

    let token = store.api_token(&rs_secret).unwrap().unwrap();
    assert_eq!((token.id, token.kind, token.label.as_str()), (read_submit, TokenKind::Api, "pipeline"));
    assert_eq!(token.scopes, vec![Scope::Read, Scope::Submit]);
    assert_eq!(store.api_token(&upload_secret).unwrap().unwrap().scopes, vec![Scope::Submit]);
    assert_eq!(store.api_token(&admin_secret).unwrap().unwrap().scopes, vec![Scope::Admin]);
    let scopes: Vec<Vec<Scope>> = store.tokens().unwrap().into_iter().map(|t| t.scopes).collect();
    assert_eq!(scopes, vec![vec![Scope::Read, Scope::Submit], vec![Scope::Submit], vec![Scope::Admin], vec![]]);

    // Worker tokens, unknown secrets and revoked tokens are not API tokens.
    assert_eq!(store.api_token(&worker_secret).unwrap(), None);
    assert_eq!(store.api_token("ta_nope").unwrap(), None);
    assert_eq!(store.api_token("").unwrap(), None);
    assert!(store.revoke_token(upload).unwrap());
    assert_eq!(store.api_token(&upload_secret).unwrap(), None);
    assert!(store.api_token(&rs_secret).unwrap().is_some());

    // Admin grants everything; otherwise exact membership.
    assert!(Scope::ALL.iter().all(|&s| grants(&[Scope::Admin], s)));
    assert!(grants(&[Scope::Submit], Scope::Submit));
    assert!(!grants(&[Scope::Submit], Scope::Read));
    assert!(!grants(&[Scope::Read, Scope::Submit], Scope::Admin));
    assert!(!grants(&[], Scope::Read));

    for s in Scope::ALL {
        assert_eq!(Scope::parse(s.as_str()), Some(s));
        assert_eq!(s.to_string(), s.as_str());
    }
    assert_eq!(Scope::parse("Admin"), None);
    assert_eq!(Scope::parse(""), None);
}

fn store_job_log_reads_after_a_cursor(db: &dyn Open) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = db.open(dir.path());
    let a = store.insert_job(&job("a", vec![1]), 0).unwrap();
    let b = store.insert_job(&job("b", vec![1]), 0).unwrap();
    store
        .append_job_log(&[
            (a, 10, LogLevel::Info, "queued".into()),
            (b, 11, LogLevel::Info, "queued".into()),
            (a, 12, LogLevel::Warn, "worker fp-x timed out".into()),
            (9_999, 12, LogLevel::Error, "a deleted job's line".into()),
            (a, 13, LogLevel::Error, "guest trapped".into()),
        ])
        .unwrap();
    store.append_job_log(&[]).unwrap();

    let all = store.job_log(a, 0, 100).unwrap();
    let lines: Vec<(u64, LogLevel, &str)> = all.iter().map(|e| (e.time_ms, e.level, e.message.as_str())).collect();
    assert_eq!(
        lines,
        vec![
            (10, LogLevel::Info, "queued"),
            (12, LogLevel::Warn, "worker fp-x timed out"),
            (13, LogLevel::Error, "guest trapped")
        ]
    );
    assert!(all.iter().all(|e| e.job == a));
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    // After a cursor, and limited.
    assert_eq!(store.job_log(a, all[0].seq, 100).unwrap(), all[1..].to_vec());
    assert_eq!(store.job_log(a, all[0].seq, 1).unwrap(), all[1..2].to_vec());
    assert_eq!(store.job_log(a, all[2].seq, 100).unwrap(), vec![]);
    assert_eq!(store.job_log(a, 0, 0).unwrap(), vec![]);
    assert_eq!(store.job_log(a, u64::MAX, 10).unwrap(), vec![]);
    let b_log = store.job_log(b, 0, 100).unwrap();
    assert_eq!((b_log.len(), b_log[0].message.as_str()), (1, "queued"));
    // The unknown job's line was dropped, not stored.
    assert_eq!(store.job_log(9_999, 0, 100).unwrap(), vec![]);

    // Lines survive a reopen and new ones continue the sequence.
    drop(store);
    let mut store = db.open(dir.path());
    store.append_job_log(&[(a, 20, LogLevel::Info, "retried".into())]).unwrap();
    let new = store.job_log(a, all[2].seq, 100).unwrap();
    assert_eq!(new.len(), 1);
    assert!(new[0].seq > b_log[0].seq);

    for level in [LogLevel::Info, LogLevel::Warn, LogLevel::Error] {
        assert_eq!(LogLevel::parse(level.as_str()), Some(level));
    }
    assert_eq!(LogLevel::parse("debug"), None);
}

fn store_reset_job_only_retries_failed_or_cancelled_jobs(db: &dyn Open) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = db.open(dir.path());
    let states = [JobState::Queued, JobState::Running, JobState::Done, JobState::Failed, JobState::Cancelled];
    let mut ids = Vec::new();
    for state in states {
        let id = store.insert_job(&job(state.as_str(), vec![1]), 0).unwrap();
        store.set_job_state(id, state, (state == JobState::Failed).then_some("guest trapped"), 50).unwrap();
        ids.push(id);
    }
    store.record_tiles(&[tile(ids[3], 0, "w")]).unwrap();

    let reset: Vec<bool> = ids.iter().map(|&id| store.reset_job(id, 100).unwrap()).collect();
    assert_eq!(reset, vec![false, false, false, true, true]);
    for (&id, state) in ids.iter().zip(states) {
        let j = store.job(id).unwrap().unwrap();
        if state == JobState::Failed || state == JobState::Cancelled {
            assert_eq!((j.state, j.error, j.finished_ms), (JobState::Queued, None, None));
        } else {
            assert_eq!(j.state, state);
        }
    }
    // Done stays done (and finished); tiles of the retried job are kept.
    assert_eq!(store.job(ids[2]).unwrap().unwrap().finished_ms, Some(50));
    assert_eq!(store.done_tiles(ids[3]).unwrap(), vec![0]);
    // A second retry of the now queued job does nothing; unknown ids neither.
    assert!(!store.reset_job(ids[3], 200).unwrap());
    assert!(!store.reset_job(9_999, 200).unwrap());
    assert!(!store.reset_job(u64::MAX, 200).unwrap());
}

fn store_delete_job_removes_rows_and_unshared_blobs(db: &dyn Open) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = db.open(dir.path());
    let shared_scene = store.put_blob(b"a scene two jobs use").unwrap();
    let own_module = store.put_blob(b"a module only the doomed job uses").unwrap();
    let other_module = store.put_blob(b"the kept job's module").unwrap();
    let hex = |h: &[u8; 32]| blake3::Hash::from_bytes(*h).to_hex().to_string();
    let spec = |scene: &[u8; 32], module: &[u8; 32]| {
        serde_json::json!({ "scene": hex(scene), "module": hex(module), "samples": 16 }).to_string()
    };
    let mut doomed = job("doomed", vec![1, 2]);
    // Capitals: the shared-scene check must still see the kept job's copy.
    doomed.spec_json =
        spec(&shared_scene, &own_module).replace(&hex(&shared_scene), &hex(&shared_scene).to_uppercase());
    let mut kept = job("kept", vec![1]);
    kept.spec_json = spec(&shared_scene, &other_module);
    let doomed = store.insert_job(&doomed, 0).unwrap();
    let kept = store.insert_job(&kept, 0).unwrap();

    // Frame blobs: some only the doomed job has; a thumbnail and a PNG its
    // frames share with the kept job's frame (identical black frames). Frame
    // 2 is PNG-only.
    let own_png = store.put_blob(b"doomed frame 1 png").unwrap();
    let own_exr = store.put_blob(b"doomed frame 1 exr").unwrap();
    let shared_thumb = store.put_blob(b"a black thumbnail").unwrap();
    let own_png2 = store.put_blob(b"doomed frame 2 png").unwrap();
    let frame = |job, frame, exr, png| FrameRecord {
        job,
        frame,
        exr,
        png,
        thumbnail: shared_thumb,
        finished_ms: 1,
        denoised_exr: None,
        denoised_png: None,
    };
    // Frame 1 was denoised: its denoised files go with it.
    let own_denoised = store.put_blob(b"doomed frame 1 denoised png").unwrap();
    let denoised = FrameRecord { denoised_png: Some(own_denoised), ..frame(doomed, 1, Some(own_exr), Some(own_png)) };
    store.record_frame(&denoised).unwrap();
    store.record_frame(&frame(doomed, 2, None, Some(own_png2))).unwrap();
    store.record_frame(&frame(kept, 1, None, Some(own_png2))).unwrap();
    store.record_tiles(&[tile(doomed, 0, "w"), tile(doomed, 5, "w"), tile(kept, 0, "w")]).unwrap();
    store
        .append_job_log(&[(doomed, 1, LogLevel::Info, "done".into()), (kept, 1, LogLevel::Info, "queued".into())])
        .unwrap();

    assert!(store.delete_job(doomed).unwrap());
    assert_eq!(store.job(doomed).unwrap(), None);
    assert_eq!(store.frames(doomed).unwrap(), vec![]);
    assert_eq!(store.done_tiles(doomed).unwrap(), Vec::<u32>::new());
    assert_eq!(store.job_log(doomed, 0, 10).unwrap(), vec![]);
    // Unshared blobs are gone; shared ones stay.
    assert!(!store.has_blob(&own_module).unwrap());
    assert!(!store.has_blob(&own_exr).unwrap());
    assert!(!store.has_blob(&own_png).unwrap());
    assert!(!store.has_blob(&own_denoised).unwrap(), "a denoised file is the frame's blob too");
    assert!(store.has_blob(&shared_scene).unwrap(), "the kept job's scene");
    assert!(store.has_blob(&shared_thumb).unwrap(), "the kept frame's thumbnail");
    assert!(store.has_blob(&own_png2).unwrap(), "the kept frame's PNG");
    assert!(store.has_blob(&other_module).unwrap());
    // The kept job is untouched.
    assert_eq!(store.jobs().unwrap().iter().map(|j| j.id).collect::<Vec<_>>(), vec![kept]);
    assert_eq!(store.frames(kept).unwrap().len(), 1);
    assert_eq!(store.done_tiles(kept).unwrap(), vec![0]);
    assert_eq!(store.job_log(kept, 0, 10).unwrap().len(), 1);

    // Deleting again, or an unknown job, says so.
    assert!(!store.delete_job(doomed).unwrap());
    assert!(!store.delete_job(u64::MAX).unwrap());

    // The last user of the scene goes: now it goes too. A blob file already
    // missing is no error.
    std::fs::remove_file(store.blob_path(&other_module)).unwrap();
    assert!(store.delete_job(kept).unwrap());
    for h in [shared_scene, shared_thumb, own_png2] {
        assert!(!store.has_blob(&h).unwrap());
    }
    assert_eq!(store.jobs().unwrap(), vec![]);
    assert!(!store.blobs().remove(&shared_scene).unwrap());
}

fn store_credit_trust_and_quarantine_keep_one_ledger_chain(db: &dyn Open) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = db.open(dir.path());
    let id = store.insert_job(&job("a", vec![1, 2]), 0).unwrap();
    for w in ["fp-a", "fp-b", "fp-c"] {
        store.upsert_worker(w, w, "{}", 1).unwrap();
    }
    let credit =
        |c: f64, gpu: bool, n: u8| TileCredit { credit: c, gpu, commitment: [n; 32], time_ms: 10 + u64::from(n) };
    // A tile confirmed by a replica credits both; a GPU tile raises GPU trust.
    let mut t0 = tile(id, 0, "fp-a");
    t0.credit = Some(credit(0.5, false, 1));
    t0.also_credit = Some(("fp-b".into(), credit(0.5, false, 1)));
    let mut t1 = tile(id, 1, "fp-a");
    t1.credit = Some(credit(0.25, true, 2));
    let mut t2 = tile(id, 2, "fp-b");
    t2.credit = Some(credit(2.0, false, 3));
    assert_eq!(store.record_tiles(&[t0.clone(), t1]).unwrap(), 2);
    assert_eq!(store.record_tiles(&[t2, t0]).unwrap(), 1, "a tile already stored credits nobody again");

    let a = store.standing("fp-a").unwrap().unwrap();
    assert_eq!((a.trust, a.gpu_trust, a.verified_tiles), (1, 1, 2));
    assert!((a.credit - 0.75).abs() < 1e-12 && (a.reputation - (0.5 + 0.5 * 0.02 + (1.0 - 0.51) * 0.02)).abs() < 1e-12);
    let b = store.standing("fp-b").unwrap().unwrap();
    assert_eq!((b.trust, b.verified_tiles), (2, 2));
    assert!((b.credit - 2.5).abs() < 1e-12);
    assert_eq!(store.standing("nobody").unwrap(), None);

    // One chain, in order, each entry hashing its predecessor.
    let entries = store.ledger(None, 0, 100).unwrap();
    assert_eq!(
        entries.iter().map(|e| (e.worker.as_str(), e.tile)).collect::<Vec<_>>(),
        vec![("fp-a", 0), ("fp-b", 0), ("fp-a", 1), ("fp-b", 2)]
    );
    assert_eq!(entries[0].prev, [0; 32]);
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash);
    }
    assert_eq!(entries[3].hash, ledger_hash(&entries[2].hash, "fp-b", id, 2, 2.0, &[3; 32]));
    assert_eq!(store.verify_ledger().unwrap(), Ok(4));
    assert_eq!(store.ledger(Some("fp-b"), entries[1].seq, 10).unwrap().len(), 1);

    // Failed checks: trust back to zero, reputation halved, quarantine at
    // the third strike, lifted by an admin.
    for n in 1..=QUARANTINE_AFTER {
        let quarantined = store.record_failed_check("fp-c", id, 3, "spot check", "{}", 20 + n).unwrap();
        assert_eq!(quarantined, n == QUARANTINE_AFTER, "strike {n}");
    }
    let c = store.standing("fp-c").unwrap().unwrap();
    assert_eq!((c.trust, c.failed_checks, c.strikes, c.quarantined), (0, 3, 3, true));
    assert!((c.reputation - 0.5f64.powi(4)).abs() < 1e-12);
    assert!(store.clear_worker("fp-c").unwrap());
    assert!(!store.clear_worker("nobody").unwrap());
    let c = store.standing("fp-c").unwrap().unwrap();
    assert_eq!((c.strikes, c.quarantined, c.failed_checks), (0, false, 3));
    assert!(!store.record_failed_check("fp-c", id, 3, "again", "{}", 30).unwrap());

    // The listing's one read says what the one-by-one reads say.
    let listed = store.workers_with_standing().unwrap();
    let one_by_one: Vec<_> =
        store.workers().unwrap().into_iter().map(|r| (r.clone(), store.standing(&r.identity).unwrap())).collect();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed, one_by_one);
}
