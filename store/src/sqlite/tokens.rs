//! Worker and API tokens in SQLite (only secrets' hashes are stored).

use rusqlite::{params, OptionalExtension};

use super::*;
use crate::support::*;
use crate::*;

impl TokenStore for SqliteBackend {
    fn create_token_scoped(
        &mut self,
        kind: TokenKind,
        label: &str,
        scopes: &[Scope],
        now_ms: u64,
    ) -> Result<(u64, String)> {
        check_scopes(kind, scopes)?;
        let secret = crate::support::new_secret(kind)?;
        self.conn.execute(
            "INSERT INTO tokens (kind, label, secret_hash, created_ms, scopes) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![kind.as_str(), label, secret_hash(&secret), to_sql(now_ms, "created_ms")?, scopes_text(scopes)],
        )?;
        Ok((from_sql(self.conn.last_insert_rowid())?, secret))
    }

    fn api_token(&self, secret: &str) -> Result<Option<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_hash = ?1 AND kind = 'api' AND revoked = 0");
        Ok(self.conn.prepare_cached(&sql)?.query_row([secret_hash(secret)], token_from_row).optional()?)
    }

    fn check_token(&self, kind: TokenKind, secret: &str) -> Result<Option<u64>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT id FROM tokens WHERE secret_hash = ?1 AND kind = ?2 AND revoked = 0")?;
        let id = stmt.query_row(params![secret_hash(secret), kind.as_str()], |row| get_u64(row, 0)).optional()?;
        Ok(id)
    }

    fn revoke_token(&mut self, id: u64) -> Result<bool> {
        let Ok(id) = i64::try_from(id) else { return Ok(false) };
        let changed = self.conn.execute("UPDATE tokens SET revoked = 1 WHERE id = ?1 AND revoked = 0", [id])?;
        Ok(changed != 0)
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id");
        query_vec(&self.conn, &sql, [], token_from_row)
    }
}
