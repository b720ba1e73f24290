//! Metadata by key in SQLite.

use rusqlite::{params, OptionalExtension};

use super::*;
use crate::*;

impl MetaStore for SqliteBackend {
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut stmt = self.conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
        Ok(stmt.query_row([key], |row| row.get(0)).optional()?)
    }

    fn take_meta_prefix(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let entries = self.meta_with_prefix(prefix)?;
        self.conn.execute("DELETE FROM meta WHERE substr(key, 1, length(?1)) = ?1", [prefix])?;
        Ok(entries)
    }

    fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let sql = "SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key";
        query_vec(&self.conn, sql, [prefix], |row| Ok((row.get(0)?, row.get(1)?)))
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}
