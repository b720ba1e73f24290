//! The farm's blobs in the database (`tessera_store::SharedBlobs`), so that
//! every coordinator reaches every scene, module and frame without a
//! shared filesystem: each coordinator's data directory becomes a cache.
//!
//! A blob is a `blobs` row (its hash and size) and its bytes in
//! `blob_chunks` of [`CHUNK`] bytes, written in one transaction: the row is
//! visible only once every chunk is committed, so a reader never sees a
//! torn blob, and no single value approaches PostgreSQL's 1 GiB field
//! limit. The chunks are stored uncompressed (`STORAGE EXTERNAL`): PNG,
//! EXR and glTF buffers do not compress, and trying costs CPU on every
//! write. Readers check blake3 anyway (`tessera_store::Blobs`).
//!
//! These tables are not fenced: a blob is content-addressed and immutable,
//! so a deposed coordinator's late insert only adds bytes nobody names,
//! and deletes follow fenced ones (a job's rows, a manifest's metadata).

use std::sync::Mutex;

use postgres::Client;
use tessera_store::{SharedBlobs, StoreError};

use crate::{off_runtime, pg_err, redacted, to_i64};

/// Bytes per `blob_chunks` row.
pub const CHUNK: usize = 1 << 20;

/// The `blobs` tables on a connection of their own, shared by the threads
/// that read and write blobs (one statement at a time).
pub struct PgBlobs {
    url: String,
    /// `None` after an error, so the next call reconnects.
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBlobs").field("url", &redacted(&self.url)).finish()
    }
}

impl Drop for PgBlobs {
    /// Off any async runtime, as `PgBackend`'s.
    fn drop(&mut self) {
        let slot = self.client.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = slot.take() {
            off_runtime(move || drop(client));
        }
    }
}

impl PgBlobs {
    /// Blobs in the database at `url` (whose schema is already migrated:
    /// `PgBackend::connect` did it).
    pub fn connect(url: &str) -> Result<PgBlobs, StoreError> {
        let blobs = PgBlobs { url: url.to_owned(), client: Mutex::new(None) };
        blobs.with(|_| Ok(()))?;
        Ok(blobs)
    }

    /// Runs `f` on the connection (made first if need be), off any async
    /// runtime; drops the connection if `f` failed, so a broken one is
    /// replaced rather than reused.
    fn with<R: Send>(&self, f: impl FnOnce(&mut Client) -> Result<R, StoreError> + Send) -> Result<R, StoreError> {
        let mut guard = self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let url = &self.url;
        let slot: &mut Option<Client> = &mut guard;
        off_runtime(move || {
            if slot.is_none() {
                *slot = Some(crate::connect_client(url)?);
            }
            let client = slot.as_mut().expect("connected above");
            let result = f(client);
            if result.is_err() {
                *slot = None;
            }
            result
        })
    }
}

impl SharedBlobs for PgBlobs {
    fn contains(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let h = &hash[..];
        self.with(|db| {
            Ok(db.query_one("SELECT EXISTS (SELECT 1 FROM blobs WHERE hash = $1)", &[&h]).map_err(pg_err)?.get(0))
        })
    }

    fn insert(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<(), StoreError> {
        let h = &hash[..];
        let size = to_i64(bytes.len() as u64, "blob size")?;
        self.with(|db| {
            let mut tx = db.transaction().map_err(pg_err)?;
            // Two coordinators storing the same blob: the second waits for
            // the first's commit, then finds the row and writes nothing.
            let fresh = tx
                .execute("INSERT INTO blobs (hash, size) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING", &[&h, &size])
                .map_err(pg_err)?;
            if fresh == 1 {
                let insert =
                    tx.prepare("INSERT INTO blob_chunks (hash, seq, bytes) VALUES ($1, $2, $3)").map_err(pg_err)?;
                for (seq, chunk) in bytes.chunks(CHUNK).enumerate() {
                    tx.execute(&insert, &[&h, &(seq as i32), &chunk]).map_err(pg_err)?;
                }
            }
            tx.commit().map_err(pg_err)
        })
    }

    fn fetch(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let h = &hash[..];
        self.with(|db| {
            let mut tx = db.transaction().map_err(pg_err)?;
            let Some(row) = tx.query_opt("SELECT size FROM blobs WHERE hash = $1", &[&h]).map_err(pg_err)? else {
                return Ok(None);
            };
            let size: i64 = row.get(0);
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            for row in tx.query("SELECT bytes FROM blob_chunks WHERE hash = $1 ORDER BY seq", &[&h]).map_err(pg_err)? {
                bytes.extend_from_slice(row.get::<_, &[u8]>(0));
            }
            tx.commit().map_err(pg_err)?;
            Ok(Some(bytes))
        })
    }

    fn size(&self, hash: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        let h = &hash[..];
        self.with(|db| {
            let row = db.query_opt("SELECT size FROM blobs WHERE hash = $1", &[&h]).map_err(pg_err)?;
            row.map(|r| crate::to_u64(r.get(0), "blob size")).transpose()
        })
    }

    fn remove(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let h = &hash[..];
        self.with(|db| Ok(db.execute("DELETE FROM blobs WHERE hash = $1", &[&h]).map_err(pg_err)? == 1))
    }
}
