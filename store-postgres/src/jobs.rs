//! Jobs and their logs in PostgreSQL.

use std::collections::BTreeSet;

use tessera_store::records::*;
use tessera_store::support::spec_blobs;
use tessera_store::{JobStore, Result, StoreError};

use crate::*;

impl JobStore for PgBackend {
    fn insert_job(&mut self, job: &NewJob, now_ms: u64) -> Result<u64> {
        let frames = serde_json::to_string(&job.frames).map_err(|e| StoreError::Database(Box::new(e)))?;
        let row = self
            .db()
            .query_one(
                "INSERT INTO jobs (name, spec_json, priority, tiles, frames_json, state, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &job.name,
                    &job.spec_json,
                    &job.priority,
                    &i64::from(job.tiles),
                    &frames,
                    &JobState::Queued.as_str(),
                    &to_i64(now_ms, "created_ms")?,
                ],
            )
            .map_err(pg_err)?;
        to_u64(row.get(0), "job id")
    }

    fn job(&self, id: u64) -> Result<Option<JobRecord>> {
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        self.db().query_opt(&sql, &[&id]).map_err(pg_err)?.map(|r| job_from_row(&r)).transpose()
    }

    fn jobs(&self) -> Result<Vec<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY id DESC");
        self.db().query(&sql, &[]).map_err(pg_err)?.iter().map(job_from_row).collect()
    }

    fn job_states(&self) -> Result<Vec<(u64, JobState)>> {
        let rows = self.db().query("SELECT id, state FROM jobs ORDER BY id DESC", &[]).map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                let state: String = r.get(1);
                let parsed = JobState::parse(&state).ok_or_else(|| bad(format!("unknown job state {state:?}")))?;
                Ok((to_u64(r.get(0), "job id")?, parsed))
            })
            .collect()
    }

    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY id");
        self.db().query(&sql, &[]).map_err(pg_err)?.iter().map(job_from_row).collect()
    }

    fn set_job_state(&mut self, id: u64, state: JobState, error: Option<&str>, now_ms: u64) -> Result<()> {
        let finished = if state.is_finished() { Some(to_i64(now_ms, "finished_ms")?) } else { None };
        let changed = match i64::try_from(id) {
            Ok(key) => self
                .db()
                .execute(
                    "UPDATE jobs SET state = $2, error = $3, finished_ms = $4 WHERE id = $1",
                    &[&key, &state.as_str(), &error, &finished],
                )
                .map_err(pg_err)?,
            Err(_) => 0,
        };
        if changed == 0 {
            return Err(StoreError::NotFound(format!("job {id}")));
        }
        Ok(())
    }

    fn reset_job(&mut self, id: u64, _now_ms: u64) -> Result<bool> {
        let Ok(id) = i64::try_from(id) else { return Ok(false) };
        let changed = self
            .db()
            .execute(
                "UPDATE jobs SET state = 'queued', error = NULL, finished_ms = NULL
                 WHERE id = $1 AND state IN ('failed', 'cancelled')",
                &[&id],
            )
            .map_err(pg_err)?;
        Ok(changed != 0)
    }

    fn delete_job_rows(&mut self, id: u64) -> Result<Option<Vec<[u8; 32]>>> {
        let Ok(key) = i64::try_from(id) else { return Ok(None) };
        self.run(|db| {
            let mut tx = db.transaction().map_err(pg_err)?;
            let Some(spec) =
                tx.query_opt("SELECT spec_json FROM jobs WHERE id = $1 FOR UPDATE", &[&key]).map_err(pg_err)?
            else {
                return Ok(None);
            };
            let spec: String = spec.get(0);
            let mut candidates: BTreeSet<[u8; 32]> = BTreeSet::new();
            let sql = format!("SELECT {FRAME_COLUMNS} FROM frames WHERE job = $1");
            for row in tx.query(&sql, &[&key]).map_err(pg_err)? {
                candidates.extend(frame_from_row(&row)?.blobs());
            }
            candidates.extend(spec_blobs(&spec));
            for table in ["tiles", "frames", "job_log"] {
                tx.execute(&format!("DELETE FROM {table} WHERE job = $1"), &[&key]).map_err(pg_err)?;
            }
            tx.execute("DELETE FROM jobs WHERE id = $1", &[&key]).map_err(pg_err)?;
            let mut unreferenced = Vec::new();
            for hash in candidates {
                let h = &hash[..];
                let framed: bool = tx
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM frames WHERE exr = $1 OR png = $1 OR thumbnail = $1
                         OR denoised_exr = $1 OR denoised_png = $1)",
                        &[&h],
                    )
                    .map_err(pg_err)?
                    .get(0);
                // lower(): a spec written by hand may spell a hash in capitals.
                let named: bool = tx
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM jobs WHERE strpos(lower(spec_json), $1) > 0)",
                        &[&tessera_store::support::hex_of(&hash)],
                    )
                    .map_err(pg_err)?
                    .get(0);
                if !framed && !named {
                    unreferenced.push(hash);
                }
            }
            tx.commit().map_err(pg_err)?;
            Ok(Some(unreferenced))
        })
    }

    fn append_job_log(&mut self, entries: &[(u64, u64, LogLevel, String)]) -> Result<()> {
        self.run(|db| {
            let mut tx = db.transaction().map_err(pg_err)?;
            let insert = tx
                .prepare(
                    "INSERT INTO job_log (job, time_ms, level, message)
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1)",
                )
                .map_err(pg_err)?;
            for (job, time_ms, level, message) in entries {
                // An id past i64 cannot name a stored job.
                let Ok(job) = i64::try_from(*job) else { continue };
                tx.execute(&insert, &[&job, &to_i64(*time_ms, "log time_ms")?, &level.as_str(), message])
                    .map_err(pg_err)?;
            }
            tx.commit().map_err(pg_err)?;
            Ok(())
        })
    }

    fn job_log(&self, job: u64, after_seq: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let (Ok(job), Ok(after)) = (i64::try_from(job), i64::try_from(after_seq)) else { return Ok(Vec::new()) };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .db()
            .query(
                "SELECT seq, job, time_ms, level, message FROM job_log
                 WHERE job = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&job, &after, &limit],
            )
            .map_err(pg_err)?;
        rows.iter()
            .map(|row| {
                let level: String = row.get(3);
                Ok(LogEntry {
                    seq: to_u64(row.get(0), "log seq")?,
                    job: to_u64(row.get(1), "log job")?,
                    time_ms: to_u64(row.get(2), "log time_ms")?,
                    level: LogLevel::parse(&level).ok_or_else(|| bad(format!("unknown log level {level:?}")))?,
                    message: row.get(4),
                })
            })
            .collect()
    }
}
