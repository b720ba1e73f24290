//! Verified tiles and finished frames in SQLite.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::*;
use crate::*;

impl TileStore for SqliteBackend {
    fn record_tiles(&mut self, tiles: &[TileRecord]) -> Result<usize> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut new = 0;
        let mut credit: BTreeMap<&str, i64> = BTreeMap::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO tiles (job, idx, frame, hash, data, worker, fuel, millis, proof)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (job, idx) DO NOTHING",
            )?;
            for t in tiles {
                let inserted = insert.execute(params![
                    to_sql(t.job, "tile job")?,
                    t.index,
                    t.frame,
                    t.hash,
                    t.data,
                    t.worker,
                    to_sql(t.fuel, "tile fuel")?,
                    to_sql(t.millis, "tile millis")?,
                    t.proof,
                ])?;
                if inserted != 0 {
                    new += 1;
                    *credit.entry(t.worker.as_str()).or_default() += 1;
                    if let Some(c) = &t.credit {
                        workers::credit_tile(&tx, &t.worker, t.job, t.index, c)?;
                    }
                    if let Some((worker, c)) = &t.also_credit {
                        workers::credit_tile(&tx, worker, t.job, t.index, c)?;
                    }
                }
            }
            let mut bump = tx.prepare_cached("UPDATE workers SET tiles_done = tiles_done + ?2 WHERE identity = ?1")?;
            for (worker, n) in &credit {
                bump.execute(params![worker, n])?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    fn done_tiles(&self, job: u64) -> Result<Vec<u32>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        query_vec(&self.conn, "SELECT idx FROM tiles WHERE job = ?1 ORDER BY idx", [job], |row| row.get(0))
    }

    fn tile_count(&self, job: u64) -> Result<u32> {
        let Ok(job) = i64::try_from(job) else { return Ok(0) };
        Ok(self.conn.prepare_cached("SELECT count(*) FROM tiles WHERE job = ?1")?.query_row([job], |row| row.get(0))?)
    }

    fn frame_tiles(&self, job: u64, frame: i32) -> Result<Vec<TileRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        let sql = format!("SELECT {TILE_COLUMNS} FROM tiles WHERE job = ?1 AND frame = ?2 ORDER BY idx");
        query_vec(&self.conn, &sql, params![job, frame], tile_from_row)
    }

    fn tile_index(&self, job: u64, frame: Option<i32>) -> Result<Vec<(u32, i32, String, u64)>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        let sql = "SELECT idx, frame, worker, millis FROM tiles
                   WHERE job = ?1 AND (?2 IS NULL OR frame = ?2) ORDER BY idx";
        query_vec(&self.conn, sql, params![job, frame], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, get_u64(row, 3)?))
        })
    }

    fn tile(&self, job: u64, index: u32) -> Result<Option<TileRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(None) };
        let sql = format!("SELECT {TILE_COLUMNS} FROM tiles WHERE job = ?1 AND idx = ?2");
        Ok(self.conn.prepare_cached(&sql)?.query_row(params![job, index], tile_from_row).optional()?)
    }

    fn record_frame(&mut self, f: &FrameRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO frames (job, frame, exr, png, thumbnail, finished_ms, denoised_exr, denoised_png)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (job, frame) DO UPDATE SET
                 exr = excluded.exr, png = excluded.png, thumbnail = excluded.thumbnail,
                 finished_ms = excluded.finished_ms,
                 denoised_exr = excluded.denoised_exr, denoised_png = excluded.denoised_png",
            params![
                to_sql(f.job, "frame job")?,
                f.frame,
                f.exr,
                f.png,
                f.thumbnail,
                to_sql(f.finished_ms, "frame finished_ms")?,
                f.denoised_exr,
                f.denoised_png,
            ],
        )?;
        Ok(())
    }

    fn frames(&self, job: u64) -> Result<Vec<FrameRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(Vec::new()) };
        let sql = format!("SELECT {FRAME_COLUMNS} FROM frames WHERE job = ?1 ORDER BY frame");
        query_vec(&self.conn, &sql, [job], frame_from_row)
    }

    fn frame(&self, job: u64, frame: i32) -> Result<Option<FrameRecord>> {
        let Ok(job) = i64::try_from(job) else { return Ok(None) };
        let sql = format!("SELECT {FRAME_COLUMNS} FROM frames WHERE job = ?1 AND frame = ?2");
        Ok(self.conn.prepare_cached(&sql)?.query_row(params![job, frame], frame_from_row).optional()?)
    }
}
