//! The worker's cache of content-addressed blobs (scenes, guest modules):
//! files named by their blake3 hash, checked when written and when read,
//! evicted least-recently-used past a size cap.
//!
//! A blob is only ever written after its bytes hashed to its name, and a
//! file that no longer does (disk corruption, tampering) is deleted and
//! reported as missing, so the caller fetches it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tessera_protocol::ContentHash;

/// Why the cache could not store a blob.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {expected} arrived with hash {actual}")]
    HashMismatch { expected: ContentHash, actual: ContentHash },
    #[error("blob {hash} is {size} bytes, over the cache's {cap}-byte cap")]
    TooLarge { hash: ContentHash, size: u64, cap: u64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Default)]
struct Index {
    /// hash → (size, last use).
    entries: BTreeMap<ContentHash, (u64, u64)>,
    /// last use → hash: the eviction order.
    by_use: BTreeMap<u64, ContentHash>,
    total: u64,
    clock: u64,
}

impl Index {
    fn touch(&mut self, hash: ContentHash) {
        self.clock += 1;
        let now = self.clock;
        if let Some((_, used)) = self.entries.get_mut(&hash) {
            self.by_use.remove(used);
            *used = now;
            self.by_use.insert(now, hash);
        }
    }

    fn insert(&mut self, hash: ContentHash, size: u64) {
        self.remove(hash);
        self.clock += 1;
        self.entries.insert(hash, (size, self.clock));
        self.by_use.insert(self.clock, hash);
        self.total += size;
    }

    fn remove(&mut self, hash: ContentHash) {
        if let Some((size, used)) = self.entries.remove(&hash) {
            self.by_use.remove(&used);
            self.total -= size;
        }
    }
}

/// A directory of blobs with a size cap. Safe to share between threads.
#[derive(Debug)]
pub struct BlobCache {
    dir: PathBuf,
    cap: u64,
    index: Mutex<Index>,
}

impl BlobCache {
    /// Opens (or creates) the cache in `dir`. Files already there are
    /// indexed oldest-modified first, so the last run's recency carries over;
    /// stray temporary files are removed.
    pub fn open(dir: &Path, cap: u64) -> Result<BlobCache, BlobError> {
        let io = |source| BlobError::Io { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match name.parse::<ContentHash>() {
                Ok(hash) => {
                    let meta = entry.metadata().map_err(io)?;
                    let modified = meta.modified().ok();
                    found.push((modified, hash, meta.len()));
                }
                Err(_) if name.ends_with(".part") => {
                    let _ = std::fs::remove_file(entry.path());
                }
                Err(_) => {}
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, hash, size) in found {
            index.insert(hash, size);
        }
        let cache = BlobCache { dir: dir.to_path_buf(), cap, index: Mutex::new(index) };
        cache.evict(None)?;
        Ok(cache)
    }

    fn path(&self, hash: &ContentHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // The index is consistent after every statement, so a panic while
        // it was held leaves nothing half-done.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The blob's bytes if cached and intact.
    pub fn get(&self, hash: &ContentHash) -> Option<Vec<u8>> {
        if !self.lock().entries.contains_key(hash) {
            return None;
        }
        let path = self.path(hash);
        match std::fs::read(&path) {
            Ok(bytes) if ContentHash::of(&bytes) == *hash => {
                self.lock().touch(*hash);
                Some(bytes)
            }
            Ok(_) => {
                tracing::warn!(%hash, path = %path.display(), "cached blob is corrupt; fetching it again");
                let _ = std::fs::remove_file(&path);
                self.lock().remove(*hash);
                None
            }
            Err(_) => {
                self.lock().remove(*hash);
                None
            }
        }
    }

    /// Stores `bytes` as `hash` after checking that they hash to it, then
    /// evicts the least recently used blobs until the cache fits its cap.
    pub fn put(&self, hash: &ContentHash, bytes: &[u8]) -> Result<(), BlobError> {
        let actual = ContentHash::of(bytes);
        if actual != *hash {
            return Err(BlobError::HashMismatch { expected: *hash, actual });
        }
        let size = bytes.len() as u64;
        if size > self.cap {
            return Err(BlobError::TooLarge { hash: *hash, size, cap: self.cap });
        }
        let path = self.path(hash);
        let part = self.dir.join(format!("{}.{}.part", hash.to_hex(), std::process::id()));
        let io = |source| BlobError::Io { path: path.clone(), source };
        std::fs::write(&part, bytes).map_err(io)?;
        std::fs::rename(&part, &path).map_err(io)?;
        self.lock().insert(*hash, size);
        self.evict(Some(*hash))
    }

    fn evict(&self, keep: Option<ContentHash>) -> Result<(), BlobError> {
        loop {
            let victim = {
                let mut index = self.lock();
                if index.total <= self.cap {
                    return Ok(());
                }
                let Some(victim) = index.by_use.values().copied().find(|h| Some(*h) != keep) else { return Ok(()) };
                index.remove(victim);
                victim
            };
            let path = self.path(&victim);
            tracing::debug!(hash = %victim, "evicting cached blob");
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(BlobError::Io { path, source }),
            }
        }
    }

    /// Bytes held now.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_eviction_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 250).unwrap();
        let blobs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
        let hashes: Vec<ContentHash> = blobs.iter().map(|b| ContentHash::of(b)).collect();
        cache.put(&hashes[0], &blobs[0]).unwrap();
        cache.put(&hashes[1], &blobs[1]).unwrap();
        assert!(cache.get(&hashes[0]).is_some()); // 0 is now the most recent
        cache.put(&hashes[2], &blobs[2]).unwrap(); // evicts 1
        assert!(cache.get(&hashes[1]).is_none());
        assert_eq!(cache.get(&hashes[0]).as_deref(), Some(&blobs[0][..]));
        assert_eq!(cache.total_bytes(), 200);

        assert!(matches!(cache.put(&hashes[1], &blobs[0]), Err(BlobError::HashMismatch { .. })));
        assert!(matches!(cache.put(&ContentHash::of(&[0; 300]), &[0; 300]), Err(BlobError::TooLarge { .. })));

        std::fs::write(dir.path().join(hashes[2].to_hex()), b"tampered").unwrap();
        assert!(cache.get(&hashes[2]).is_none());
        assert!(!dir.path().join(hashes[2].to_hex()).exists());

        drop(cache);
        let reopened = BlobCache::open(dir.path(), 250).unwrap();
        assert_eq!(reopened.get(&hashes[0]).as_deref(), Some(&blobs[0][..]));
    }
}
