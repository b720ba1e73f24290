//! Jobs and their logs in SQLite.

use std::collections::BTreeSet;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::*;
use crate::support::*;
use crate::*;

impl JobStore for SqliteBackend {
    fn insert_job(&mut self, job: &NewJob, now_ms: u64) -> Result<u64> {
        let frames =
            serde_json::to_string(&job.frames).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        self.conn.execute(
            "INSERT INTO jobs (name, spec_json, priority, tiles, frames_json, state, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                job.name,
                job.spec_json,
                job.priority,
                job.tiles,
                frames,
                JobState::Queued.as_str(),
                to_sql(now_ms, "created_ms")?
            ],
        )?;
        from_sql(self.conn.last_insert_rowid())
    }

    fn job(&self, id: u64) -> Result<Option<JobRecord>> {
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([id], job_from_row).optional()?)
    }

    fn jobs(&self) -> Result<Vec<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY id DESC");
        query_vec(&self.conn, &sql, [], job_from_row)
    }

    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY id");
        query_vec(&self.conn, &sql, [], job_from_row)
    }

    fn set_job_state(&mut self, id: u64, state: JobState, error: Option<&str>, now_ms: u64) -> Result<()> {
        let finished = if state.is_finished() { Some(to_sql(now_ms, "finished_ms")?) } else { None };
        let changed = match i64::try_from(id) {
            Ok(key) => self.conn.execute(
                "UPDATE jobs SET state = ?2, error = ?3, finished_ms = ?4 WHERE id = ?1",
                params![key, state.as_str(), error, finished],
            )?,
            Err(_) => 0,
        };
        if changed == 0 {
            return Err(StoreError::NotFound(format!("job {id}")));
        }
        Ok(())
    }

    fn reset_job(&mut self, id: u64, _now_ms: u64) -> Result<bool> {
        let Ok(id) = i64::try_from(id) else { return Ok(false) };
        let changed = self.conn.execute(
            "UPDATE jobs SET state = 'queued', error = NULL, finished_ms = NULL
             WHERE id = ?1 AND state IN ('failed', 'cancelled')",
            [id],
        )?;
        Ok(changed != 0)
    }

    fn delete_job_rows(&mut self, id: u64) -> Result<Option<Vec<[u8; 32]>>> {
        let Ok(key) = i64::try_from(id) else { return Ok(None) };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let spec: Option<String> = tx
            .prepare_cached("SELECT spec_json FROM jobs WHERE id = ?1")?
            .query_row([key], |row| row.get(0))
            .optional()?;
        let Some(spec) = spec else { return Ok(None) };
        let mut candidates: BTreeSet<[u8; 32]> = BTreeSet::new();
        {
            let sql = format!("SELECT {FRAME_COLUMNS} FROM frames WHERE job = ?1");
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query([key])?;
            while let Some(row) = rows.next()? {
                candidates.extend(frame_from_row(row)?.blobs());
            }
        }
        candidates.extend(spec_blobs(&spec));
        tx.execute("DELETE FROM tiles WHERE job = ?1", [key])?;
        tx.execute("DELETE FROM frames WHERE job = ?1", [key])?;
        tx.execute("DELETE FROM job_log WHERE job = ?1", [key])?;
        tx.execute("DELETE FROM jobs WHERE id = ?1", [key])?;
        let mut unreferenced = Vec::new();
        {
            let mut in_frames = tx.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM frames WHERE exr = ?1 OR png = ?1 OR thumbnail = ?1
                     OR denoised_exr = ?1 OR denoised_png = ?1)",
            )?;
            // lower(): a spec written by hand may spell a hash in capitals.
            let mut in_jobs =
                tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE instr(lower(spec_json), ?1) > 0)")?;
            for hash in candidates {
                let framed: bool = in_frames.query_row([&hash], |row| row.get(0))?;
                if !framed && !in_jobs.query_row([hex(&hash)], |row| row.get::<_, bool>(0))? {
                    unreferenced.push(hash);
                }
            }
        }
        tx.commit()?;
        Ok(Some(unreferenced))
    }

    fn append_job_log(&mut self, entries: &[(u64, u64, LogLevel, String)]) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO job_log (job, time_ms, level, message)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?1)",
            )?;
            for (job, time_ms, level, message) in entries {
                // An id past i64 cannot name a stored job.
                let Ok(job) = i64::try_from(*job) else { continue };
                insert.execute(params![job, to_sql(*time_ms, "log time_ms")?, level.as_str(), message])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn job_log(&self, job: u64, after_seq: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let (Ok(job), Ok(after)) = (i64::try_from(job), i64::try_from(after_seq)) else { return Ok(Vec::new()) };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        query_vec(
            &self.conn,
            "SELECT seq, job, time_ms, level, message FROM job_log
             WHERE job = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            params![job, after, limit],
            |row| {
                let level: String = row.get(3)?;
                Ok(LogEntry {
                    seq: get_u64(row, 0)?,
                    job: get_u64(row, 1)?,
                    time_ms: get_u64(row, 2)?,
                    level: LogLevel::parse(&level).ok_or_else(|| bad_text(3, "log level", &level))?,
                    message: row.get(4)?,
                })
            },
        )
    }
}
