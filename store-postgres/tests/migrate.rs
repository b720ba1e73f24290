//! `tessera migrate`'s copy: a populated SQLite farm into an empty
//! PostgreSQL database, every record read back equal through the store's
//! traits on both sides, and the blobs from another data directory; a
//! second copy into the same database is refused, and so is a farm whose
//! records name a blob it lacks.

use tessera_store::*;
use tessera_store_postgres::{migrate, PgBackend};
use tessera_test_support::postgres::Cluster;

fn tile(job: u64, index: u32, worker: &str, credit: Option<TileCredit>) -> TileRecord {
    TileRecord {
        job,
        index,
        frame: 1,
        hash: [index as u8; 32],
        data: vec![index as u8; 1000],
        worker: worker.into(),
        fuel: 7,
        millis: 3,
        proof: Some(format!("{{\"tile\":{index}}}")),
        credit,
        also_credit: None,
    }
}

#[test]
fn a_sqlite_farm_moves_to_postgres_record_for_record() {
    let dir = tempfile::tempdir().unwrap();
    let (job, secret, scene, png) = {
        let mut s = Store::open(dir.path()).unwrap();
        let scene = s.put_blob(b"scene").unwrap();
        let png = s.put_blob(b"png").unwrap();
        let spec = format!(r#"{{"scene":"{}","module":"{}"}}"#, support::hex_of(&scene), support::hex_of(&scene));
        let first = s
            .insert_job(
                &NewJob { name: "gone".into(), spec_json: "{}".into(), priority: 0, tiles: 1, frames: vec![1] },
                1,
            )
            .unwrap();
        s.delete_job(first).unwrap();
        let job = s
            .insert_job(&NewJob { name: "shot".into(), spec_json: spec, priority: 2, tiles: 3, frames: vec![1] }, 5)
            .unwrap();
        s.set_job_state(job, JobState::Done, None, 9).unwrap();
        s.upsert_worker("fp-a", "render-01", "{}", 2).unwrap();
        let credit = TileCredit { credit: 0.125, gpu: false, commitment: [9; 32], time_ms: 6 };
        s.record_tiles(&[tile(job, 0, "fp-a", Some(credit.clone())), tile(job, 1, "fp-a", Some(credit))]).unwrap();
        s.record_frame(&FrameRecord {
            job,
            frame: 1,
            exr: None,
            png: Some(png),
            thumbnail: png,
            finished_ms: 8,
            denoised_exr: None,
            denoised_png: None,
        })
        .unwrap();
        s.record_failed_check("fp-a", job, 2, "spot check", "{}", 7).unwrap();
        let (_, secret) = s.create_token_scoped(TokenKind::Api, "pipeline", &[Scope::Read], 3).unwrap();
        s.set_meta("coordinator.key", b"\x00\x01key").unwrap();
        s.append_job_log(&[(job, 4, LogLevel::Warn, "a warning".into())]).unwrap();
        (job, secret, scene, png)
    };

    let url = Cluster::shared().unwrap_or_else(|e| panic!("no PostgreSQL: {e}")).fresh_database();
    let mut pg = PgBackend::connect(&url).unwrap();
    let report = migrate::from_sqlite(dir.path(), &mut pg).unwrap();
    let rows = |t: &str| report.tables.iter().find(|c| c.table == t).unwrap().rows;
    assert_eq!((rows("jobs"), rows("tiles"), rows("ledger"), rows("tokens"), rows("evidence")), (1, 2, 2, 1, 1));
    assert_eq!((report.blobs, report.blob_bytes), (2, 8));

    // A coordinator with a data directory of its own serves the blobs.
    let lite = Store::open(dir.path()).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let pg = Store::with_backend(elsewhere.path(), Box::new(PgBackend::connect(&url).unwrap())).unwrap();
    assert_eq!(pg.get_blob(&scene).unwrap(), b"scene");
    assert_eq!(pg.get_blob(&png).unwrap(), b"png");
    assert_eq!(pg.jobs().unwrap(), lite.jobs().unwrap());
    assert_eq!(pg.frame_tiles(job, 1).unwrap(), lite.frame_tiles(job, 1).unwrap());
    assert_eq!(pg.frames(job).unwrap(), lite.frames(job).unwrap());
    assert_eq!(pg.workers().unwrap(), lite.workers().unwrap());
    assert_eq!(pg.standing("fp-a").unwrap(), lite.standing("fp-a").unwrap());
    assert_eq!(pg.ledger(None, 0, 10).unwrap(), lite.ledger(None, 0, 10).unwrap());
    assert_eq!(pg.verify_ledger().unwrap(), Ok(2));
    assert_eq!(pg.tokens().unwrap(), lite.tokens().unwrap());
    assert_eq!(pg.api_token(&secret).unwrap().map(|t| t.scopes), Some(vec![Scope::Read]), "tokens still work");
    assert_eq!(pg.meta("coordinator.key").unwrap().as_deref(), Some(&b"\x00\x01key"[..]));
    assert_eq!(pg.job_log(job, 0, 10).unwrap(), lite.job_log(job, 0, 10).unwrap());

    // Ids go on past the copied ones (the deleted job's id is not reused).
    let mut backend = PgBackend::connect(&url).unwrap();
    backend.lead("after-migration", 60_000).unwrap().unwrap();
    let next = backend
        .insert_job(&NewJob { name: "next".into(), spec_json: "{}".into(), priority: 0, tiles: 1, frames: vec![1] }, 10)
        .unwrap();
    assert_eq!(next, job + 1);

    // A second copy is refused: the target is not empty (and now led).
    let err = migrate::from_sqlite(dir.path(), &mut PgBackend::connect(&url).unwrap()).unwrap_err();
    assert!(err.to_string().contains("leads") || err.to_string().contains("not empty"), "{err}");
    drop(pg);
}

#[test]
fn a_farm_missing_a_named_blob_is_not_migrated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Store::open(dir.path()).unwrap();
        let scene = s.put_blob(b"a scene").unwrap();
        let spec = format!(r#"{{"scene":"{}","module":"{}"}}"#, support::hex_of(&scene), support::hex_of(&scene));
        s.insert_job(&NewJob { name: "shot".into(), spec_json: spec, priority: 0, tiles: 1, frames: vec![1] }, 1)
            .unwrap();
        std::fs::remove_file(s.blob_path(&scene)).unwrap();
    }
    let url = Cluster::shared().unwrap_or_else(|e| panic!("no PostgreSQL: {e}")).fresh_database();
    let mut pg = PgBackend::connect(&url).unwrap();
    let err = migrate::from_sqlite(dir.path(), &mut pg).unwrap_err();
    assert!(err.to_string().contains("the data directory lacks it"), "{err}");
    assert_eq!(pg.jobs().unwrap(), vec![], "nothing copied");
}
