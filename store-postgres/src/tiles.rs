//! Verified tiles and finished frames in PostgreSQL.

use std::collections::BTreeMap;

use tessera_store::records::*;
use tessera_store::{Result, TileStore};

use crate::*;

impl TileStore for PgBackend {
    /// One `INSERT … SELECT FROM unnest(…)` for the whole batch (in the
    /// batch's order: of two results for one tile, the first is kept, as
    /// on SQLite), then the credits of the tiles it stored
    /// (`workers::credit_tiles`): a few statements however many tiles a
    /// group commit holds.
    fn record_tiles(&mut self, tiles: &[TileRecord]) -> Result<usize> {
        let n = tiles.len();
        let mut cols = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for t in tiles {
            cols.0.push(to_i64(t.job, "tile job")?);
            cols.1.push(i64::from(t.index));
            cols.2.push(t.frame);
            cols.3.push(&t.hash[..]);
            cols.4.push(&t.data[..]);
            cols.5.push(t.worker.as_str());
            cols.6.push(to_i64(t.fuel, "tile fuel")?);
            cols.7.push(to_i64(t.millis, "tile millis")?);
            cols.8.push(t.proof.as_deref());
        }
        self.run(|db| {
            let mut tx = db.transaction().map_err(pg_err)?;
            let stored: std::collections::BTreeSet<(i64, i64)> = tx
                .query(
                    "INSERT INTO tiles (job, idx, frame, hash, data, worker, fuel, millis, proof)
                     SELECT job, idx, frame, hash, data, worker, fuel, millis, proof
                     FROM unnest($1::bigint[], $2::bigint[], $3::integer[], $4::bytea[], $5::bytea[], $6::text[],
                                 $7::bigint[], $8::bigint[], $9::text[]) WITH ORDINALITY
                          AS t(job, idx, frame, hash, data, worker, fuel, millis, proof, ord)
                     ORDER BY ord
                     ON CONFLICT (job, idx) DO NOTHING
                     RETURNING job, idx",
                    &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5, &cols.6, &cols.7, &cols.8],
                )
                // A tile of a job that does not exist fails the whole batch, as on SQLite.
                .map_err(pg_err)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let mut new = 0;
            let mut done: BTreeMap<&str, i64> = BTreeMap::new();
            let mut credits = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for t in tiles {
                let key = (t.job as i64, i64::from(t.index));
                // The first of the batch's results for a tile is the one stored.
                if !stored.contains(&key) || !seen.insert(key) {
                    continue;
                }
                new += 1;
                *done.entry(t.worker.as_str()).or_default() += 1;
                if let Some(c) = &t.credit {
                    credits.push((t.worker.as_str(), t.job, t.index, c));
                }
                if let Some((worker, c)) = &t.also_credit {
                    credits.push((worker.as_str(), t.job, t.index, c));
                }
            }
            if !done.is_empty() {
                workers::credit_tiles(&mut tx, &credits, &done)?;
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
