//! Worker and API tokens in PostgreSQL (only secrets' hashes are stored).

use tessera_store::records::*;
use tessera_store::support::{new_secret, scopes_text, secret_hash};
use tessera_store::{Result, TokenStore};

use crate::*;

impl TokenStore for PgBackend {
    fn create_token_scoped(
        &mut self,
        kind: TokenKind,
        label: &str,
        scopes: &[Scope],
        now_ms: u64,
    ) -> Result<(u64, String)> {
        tessera_store::support::check_scopes(kind, scopes)?;
        let secret = new_secret(kind)?;
        let row = self
            .db()
            .query_one(
                "INSERT INTO tokens (kind, label, secret_hash, created_ms, scopes) VALUES ($1, $2, $3, $4, $5)
                 RETURNING id",
                &[
                    &kind.as_str(),
                    &label,
                    &&secret_hash(&secret)[..],
                    &to_i64(now_ms, "created_ms")?,
                    &scopes_text(scopes),
                ],
            )
            .map_err(pg_err)?;
        Ok((to_u64(row.get(0), "token id")?, secret))
    }

    fn api_token(&self, secret: &str) -> Result<Option<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_hash = $1 AND kind = 'api' AND NOT revoked");
        let hash = secret_hash(secret);
        self.db().query_opt(&sql, &[&&hash[..]]).map_err(pg_err)?.map(|r| token_from_row(&r)).transpose()
    }

    fn check_token(&self, kind: TokenKind, secret: &str) -> Result<Option<u64>> {
        let hash = secret_hash(secret);
        let row = self
            .db()
            .query_opt(
                "SELECT id FROM tokens WHERE secret_hash = $1 AND kind = $2 AND NOT revoked",
                &[&&hash[..], &kind.as_str()],
            )
            .map_err(pg_err)?;
        row.map(|r| to_u64(r.get(0), "token id")).transpose()
    }

    fn revoke_token(&mut self, id: u64) -> Result<bool> {
        let Ok(id) = i64::try_from(id) else { return Ok(false) };
        let n = self
            .db()
            .execute("UPDATE tokens SET revoked = TRUE WHERE id = $1 AND NOT revoked", &[&id])
            .map_err(pg_err)?;
        Ok(n != 0)
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id");
        self.db().query(&sql, &[]).map_err(pg_err)?.iter().map(token_from_row).collect()
    }
}
