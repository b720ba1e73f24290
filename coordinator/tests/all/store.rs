//! The store on real SQLite files: durability settings, data surviving a
//! reopen, idempotent tile recording, tokens, blobs and refused databases.

use std::fs;
use std::path::Path;

use tessera_coordinator::store::*;

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
    assert_eq!(store.journal_mode().unwrap(), "wal");
    assert!(dir.path().join("data/blobs").is_dir());

    // WAL is a property of the file: a second, plain connection sees it.
    let other = rusqlite::Connection::open(dir.path().join("data").join(DB_FILE)).unwrap();
    let mode: String = other.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = other.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 1);
}

#[test]
fn store_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (job_id, token, blob) = {
        let mut store = Store::open(dir.path()).unwrap();
        let id = store.insert_job(&job("shot-010", vec![1, 2]), 1_000).unwrap();
        store.set_job_state(id, JobState::Running, None, 1_500).unwrap();
        store.upsert_worker("fp-a", "render-01", r#"{"slots":8}"#, 1_100).unwrap();
        assert_eq!(store.record_tiles(&[tile(id, 0, "fp-a"), tile(id, 5, "fp-a")]).unwrap(), 2);
        store
            .record_frame(&FrameRecord {
                job: id,
                frame: 1,
                exr: [1; 32],
                png: [2; 32],
                thumbnail: [3; 32],
                finished_ms: 2_000,
            })
            .unwrap();
        let (_, secret) = store.create_token(TokenKind::Worker, "farm room", 1_200).unwrap();
        store.set_meta("certificate", b"-----BEGIN CERTIFICATE-----").unwrap();
        let blob = store.put_blob(b"scene bytes").unwrap();
        (id, secret, blob)
    };

    let store = Store::open(dir.path()).unwrap();
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
    assert_eq!((frames[0].frame, frames[0].png, frames[0].finished_ms), (1, [2; 32], 2_000));
    let workers = store.workers().unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].tiles_done, 2);
    assert!(store.check_token(TokenKind::Worker, &token).unwrap().is_some());
    assert_eq!(store.tokens().unwrap().len(), 1);
    assert_eq!(store.meta("certificate").unwrap().as_deref(), Some(&b"-----BEGIN CERTIFICATE-----"[..]));
    assert_eq!(store.meta("absent").unwrap(), None);
    assert_eq!(store.get_blob(&blob).unwrap(), b"scene bytes");
}

#[test]
fn store_record_tiles_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
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

#[test]
fn store_tiles_of_an_unknown_job_fail_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let id = store.insert_job(&job("a", vec![1]), 0).unwrap();
    let err = store.record_tiles(&[tile(id, 0, "w"), tile(id + 1, 0, "w")]).unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
    assert_eq!(store.tile_count(id).unwrap(), 0);
    let mut huge = tile(id, 1, "w");
    huge.fuel = u64::MAX;
    assert!(matches!(store.record_tiles(&[huge]).unwrap_err(), StoreError::OutOfRange { .. }));
}

#[test]
fn store_unfinished_jobs_are_queued_or_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
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
    assert_eq!(store.jobs().unwrap().iter().map(|j| j.id).collect::<Vec<_>>(), ids);

    assert!(matches!(store.set_job_state(9_999, JobState::Done, None, 0), Err(StoreError::NotFound(_))));
    assert_eq!(store.job(9_999).unwrap(), None);
    assert_eq!(store.job(u64::MAX).unwrap(), None);
}

#[test]
fn store_workers_keep_first_seen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
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

#[test]
fn store_tokens_check_kind_revocation_and_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
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
                revoked: true
            },
            TokenRecord { id: api_id, kind: TokenKind::Api, label: "pipeline".into(), created_ms: 2, revoked: false },
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
            assert!(!files_contain(dir.path(), secret.as_bytes()), "a secret is on disk {when}");
        }
        assert!(files_contain(dir.path(), &worker_hash), "the hash is not on disk {when}");
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
    conn.pragma_update(None, "user_version", 2).unwrap();
    drop(conn);
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 2, supported: 1, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("schema version 2 is newer") && msg.contains(DB_FILE), "{msg}");
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
