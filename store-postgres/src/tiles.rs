//! Verified tiles and finished frames in PostgreSQL.

use std::collections::BTreeMap;

use tessera_store::records::*;
use tessera_store::{Result, TileStore};

use crate::*;

impl TileStore for PgBackend {
    fn record_tiles(&mut self, tiles: &[TileRecord]) -> Result<usize> {
        self.run(|db| {
            let mut tx = db.transaction().map_err(pg_err)?;
            let insert = tx
                .prepare(
                    "INSERT INTO tiles (job, idx, frame, hash, data, worker, fuel, millis, proof)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (job, idx) DO NOTHING",
                )
                .map_err(pg_err)?;
            let mut new = 0;
            let mut done: BTreeMap<&str, i64> = BTreeMap::new();
            let mut credits = Vec::new();
            for t in tiles {
                let inserted = tx
                    .execute(
                        &insert,
                        &[
                            &to_i64(t.job, "tile job")?,
                            &i64::from(t.index),
                            &t.frame,
                            &&t.hash[..],
                            &t.data,
                            &t.worker,
                            &to_i64(t.fuel, "tile fuel")?,
                            &to_i64(t.millis, "tile millis")?,
                            &t.proof,
                        ],
                    )
                    .map_err(pg_err)?;
                if inserted != 0 {
                    new += 1;
                    *done.entry(t.worker.as_str()).or_default() += 1;
                    if let Some(c) = &t.credit {
                        credits.push((t.worker.as_str(), t.job, t.index, c));
                    }
                    if let Some((worker, c)) = &t.also_credit {
                        credits.push((worker.as_str(), t.job, t.index, c));
                    }
                }
            }
            if !credits.is_empty() {
                workers::credit_tiles(&mut tx, &credits)?;
            }
            for (worker, n) in &done {
                tx.execute("UPDATE workers SET tiles_done = tiles_done + $2 WHERE identity = $1", &[worker, n])
                    .map_err(pg_err)?;
            }
            tx.commit().map_err(pg_err)?;
            Ok(new)
        })
    }

    fn done_tiles(&self, job: u64) -> Result<Vec<u32>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        let rows = self.db().query("SELECT idx FROM tiles WHERE job = $1 ORDER BY idx", &[&job]).map_err(pg_err)?;
        rows.iter().map(|r| to_u32(r.get(0), "tile index")).collect()
    }

    fn tile_count(&self, job: u64) -> Result<u32> {
        let Ok(job) = i64::try_from(job) else { return Ok(0) };
        let row = self.db().query_one("SELECT count(*) FROM tiles WHERE job = $1", &[&job]).map_err(pg_err)?;
        to_u32(row.get(0), "tile count")
    }

    fn frame_tiles(&self, job: u64, frame: i32) -> Result<Vec<TileRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        let sql = format!("SELECT {TILE_COLUMNS} FROM tiles WHERE job = $1 AND frame = $2 ORDER BY idx");
        self.db().query(&sql, &[&job, &frame]).map_err(pg_err)?.iter().map(tile_from_row).collect()
    }

    fn tile_index(&self, job: u64, frame: Option<i32>) -> Result<Vec<(u32, i32, String, u64)>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        let rows = self
            .db()
            .query(
                "SELECT idx, frame, worker, millis FROM tiles
                 WHERE job = $1 AND ($2::integer IS NULL OR frame = $2) ORDER BY idx",
                &[&job, &frame],
            )
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| Ok((to_u32(r.get(0), "tile index")?, r.get(1), r.get(2), to_u64(r.get(3), "tile millis")?)))
            .collect()
    }

    fn tile(&self, job: u64, index: u32) -> Result<Option<TileRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(None) };
        let sql = format!("SELECT {TILE_COLUMNS} FROM tiles WHERE job = $1 AND idx = $2");
        self.db().query_opt(&sql, &[&job, &i64::from(index)]).map_err(pg_err)?.map(|r| tile_from_row(&r)).transpose()
    }

    fn record_frame(&mut self, f: &FrameRecord) -> Result<()> {
        let opt = |h: &Option<[u8; 32]>| h.map(|h| h.to_vec());
        self.db()
            .execute(
                "INSERT INTO frames (job, frame, exr, png, thumbnail, finished_ms, denoised_exr, denoised_png)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (job, frame) DO UPDATE SET
                     exr = excluded.exr, png = excluded.png, thumbnail = excluded.thumbnail,
                     finished_ms = excluded.finished_ms,
                     denoised_exr = excluded.denoised_exr, denoised_png = excluded.denoised_png",
                &[
                    &to_i64(f.job, "frame job")?,
                    &f.frame,
                    &opt(&f.exr),
                    &opt(&f.png),
                    &&f.thumbnail[..],
                    &to_i64(f.finished_ms, "frame finished_ms")?,
                    &opt(&f.denoised_exr),
                    &opt(&f.denoised_png),
                ],
            )
            .map_err(pg_err)?;
        Ok(())
    }

    fn frames(&self, job: u64) -> Result<Vec<FrameRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        let sql = format!("SELECT {FRAME_COLUMNS} FROM frames WHERE job = $1 ORDER BY frame");
        self.db().query(&sql, &[&job]).map_err(pg_err)?.iter().map(frame_from_row).collect()
    }

    fn frame(&self, job: u64, frame: i32) -> Result<Option<FrameRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(None) };
        let sql = format!("SELECT {FRAME_COLUMNS} FROM frames WHERE job = $1 AND frame = $2");
        self.db().query_opt(&sql, &[&job, &frame]).map_err(pg_err)?.map(|r| frame_from_row(&r)).transpose()
    }
}
