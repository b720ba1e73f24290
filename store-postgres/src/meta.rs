//! Metadata by key in PostgreSQL.

use tessera_store::{MetaStore, Result};

use crate::{pg_err, PgBackend};

impl MetaStore for PgBackend {
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let row = self.db().query_opt("SELECT value FROM meta WHERE key = $1", &[&key]).map_err(pg_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn take_meta_prefix(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = self
            .db()
            .query("DELETE FROM meta WHERE starts_with(key, $1) RETURNING key, value", &[&prefix])
            .map_err(pg_err)?;
        let mut entries: Vec<(String, Vec<u8>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        entries.sort();
        Ok(entries)
    }

    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = self
            .db()
            .query("SELECT key, value FROM meta WHERE starts_with(key, $1) ORDER BY key COLLATE \"C\"", &[&prefix])
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.db()
            .execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .map_err(pg_err)?;
        Ok(())
    }
}
