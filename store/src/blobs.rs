//! Content-addressed blob files: scenes, guest modules, frames.
//!
//! A blob lives at `<root>/<first 2 hex digits>/<64 hex digits>` of its
//! blake3 hash (DESIGN.md invariant 3). Two levels keep directories small
//! with millions of blobs.
//!
//! **Shared tier.** When several coordinators run one farm (PostgreSQL),
//! each has a data directory of its own and the blobs live in the database
//! too ([`SharedBlobs`]): a put writes both, a read takes the local file
//! and falls back to the shared copy, which it checks and caches locally.
//! So a frame one coordinator assembled is served by another, and a scene
//! uploaded through one is rendered by another, with no shared filesystem.
//!
//! **Invariant:** a file at a blob's final path is complete. Writes go to a
//! temporary file in the same directory, which is fsynced, renamed into place
//! and then the directory fsynced, so a crash leaves either no file or the
//! whole blob, never a torn one. Readers rehash what they read anyway, since
//! disks and people do alter files.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{hex, StoreError};

/// Blobs every coordinator of a farm can reach: the tier behind each one's
/// local directory (the PostgreSQL backend's `blobs` table). Content-
/// addressed like the files, so writing one twice, or from a coordinator
/// that has since lost its lease, only ever adds the same bytes.
///
/// Implementations must be usable from any thread, as [`Blobs`] is.
pub trait SharedBlobs: Send + Sync + std::fmt::Debug {
    /// Whether the blob is stored (complete: its bytes are committed).
    fn contains(&self, hash: &[u8; 32]) -> Result<bool, StoreError>;
    /// Stores `bytes` under `hash` (their blake3, which the caller checked),
    /// durably; a blob already there is left as it is.
    fn insert(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<(), StoreError>;
    /// The blob's bytes as stored (the caller checks them), if it is there.
    fn fetch(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The blob's length, if it is there.
    fn size(&self, hash: &[u8; 32]) -> Result<Option<u64>, StoreError>;
    /// Removes the blob; whether it was there.
    fn remove(&self, hash: &[u8; 32]) -> Result<bool, StoreError>;
}

/// Prefix of the temporary files [`Blobs::put`] writes before renaming them.
const TEMP_PREFIX: &str = ".tmp-";

/// The blob directory. Cheap to clone and `Send + Sync`: unlike the database
/// connection, blobs can be read and written from any thread (an HTTP handler
/// serving a frame need not queue behind the store thread).
#[derive(Clone, Debug)]
pub struct Blobs {
    root: PathBuf,
    /// The farm's shared tier, when it has one.
    shared: Option<Arc<dyn SharedBlobs>>,
}

impl Blobs {
    /// Opens (creating it if needed) the blob directory at `root`, and removes
    /// temporary files that a crash left behind mid-write.
    pub fn open(root: &Path) -> Result<Blobs, StoreError> {
        Blobs::with_shared(root, None)
    }

    /// [`Blobs::open`], in front of a farm's shared tier: the local
    /// directory is then a cache of it, filled as blobs are read.
    pub fn with_shared(root: &Path, shared: Option<Arc<dyn SharedBlobs>>) -> Result<Blobs, StoreError> {
        fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
        let blobs = Blobs { root: root.to_owned(), shared };
        blobs.remove_temporaries()?;
        Ok(blobs)
    }

    /// Whether blobs are also kept in a tier every coordinator reaches.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The directory that holds the blobs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob named `hash` lives in the local directory (whether
    /// or not it is there: see [`Blobs::local_path`]).
    pub fn path(&self, hash: &[u8; 32]) -> PathBuf {
        let name = hex(hash);
        self.root.join(&name[..2]).join(name)
    }

    /// Whether the blob named `hash` is stored. Does not read or check it.
    /// With a shared tier, that tier decides: a file cached here may be an
    /// orphan of a blob another coordinator has since removed, and a job
    /// must only name blobs every coordinator can reach.
    pub fn has(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        match &self.shared {
            Some(shared) => shared.contains(hash),
            None => Ok(self.local_len(hash)?.is_some()),
        }
    }

    /// The blob's length in bytes, if it is stored (here or shared).
    pub fn len(&self, hash: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        if let Some(len) = self.local_len(hash)? {
            return Ok(Some(len));
        }
        match &self.shared {
            Some(shared) => shared.size(hash),
            None => Ok(None),
        }
    }

    /// The local file of the blob named `hash`, fetched from the shared
    /// tier (checked) first if this coordinator does not have it yet: for
    /// callers that stream a file. A blob stored nowhere is
    /// [`StoreError::NotFound`].
    pub fn local_path(&self, hash: &[u8; 32]) -> Result<PathBuf, StoreError> {
        if self.local_len(hash)?.is_none() {
            self.fetch_shared(hash)?;
        }
        Ok(self.path(hash))
    }

    fn local_len(&self, hash: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        let path = self.path(hash);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// Copies the blob from the shared tier into the local directory,
    /// checking that its bytes hash to its name; returns them.
    fn fetch_shared(&self, hash: &[u8; 32]) -> Result<Vec<u8>, StoreError> {
        let not_found = || StoreError::NotFound(format!("blob {}", hex(hash)));
        let Some(shared) = &self.shared else { return Err(not_found()) };
        let bytes = shared.fetch(hash)?.ok_or_else(not_found)?;
        let actual = *blake3::hash(&bytes).as_bytes();
        if &actual != hash {
            return Err(StoreError::Corrupt { hash: hex(hash), actual: hex(&actual), path: PathBuf::from("(shared)") });
        }
        self.put_local(hash, &bytes)?;
        Ok(bytes)
    }

    /// Stores `bytes` and returns their blake3 hash, its name.
    ///
    /// Durable on return: the data and the directory entry are fsynced. If a
    /// file of the same length is already stored under the hash, nothing is
    /// written (content addressing makes it the same blob); a file of another
    /// length (damaged) is replaced.
    ///
    /// With a shared tier, the blob is also stored there (durably) before
    /// this returns, unless it already is.
    pub fn put(&self, bytes: &[u8]) -> Result<[u8; 32], StoreError> {
        let hash = *blake3::hash(bytes).as_bytes();
        self.put_local(&hash, bytes)?;
        if let Some(shared) = &self.shared {
            if !shared.contains(&hash)? {
                shared.insert(&hash, bytes)?;
            }
        }
        Ok(hash)
    }

    /// Writes the local file of `bytes`, whose blake3 is `hash`.
    fn put_local(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(hash);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == bytes.len() as u64 => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, e)),
        }
        let dir = path.parent().unwrap_or(&self.root);
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
            // The new subdirectory's own entry must be durable too.
            sync_dir(&self.root)?;
        }
        let mut tmp = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(dir).map_err(|e| io_err(dir, e))?;
        tmp.write_all(bytes).map_err(|e| io_err(tmp.path(), e))?;
        tmp.as_file().sync_all().map_err(|e| io_err(tmp.path(), e))?;
        tmp.persist(&path).map_err(|e| io_err(&path, e.error))?;
        sync_dir(dir)?;
        Ok(())
    }

    /// Reads the blob named `hash`, checking that its bytes still hash to it.
    ///
    /// A missing blob is [`StoreError::NotFound`]; one whose bytes changed on
    /// disk is [`StoreError::Corrupt`]. With a shared tier, a blob missing
    /// here is fetched from it (and kept here), and a damaged local file is
    /// replaced by the shared copy.
    pub fn get(&self, hash: &[u8; 32]) -> Result<Vec<u8>, StoreError> {
        let path = self.path(hash);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.fetch_shared(hash),
            Err(e) => return Err(io_err(&path, e)),
        };
        let actual = *blake3::hash(&bytes).as_bytes();
        if &actual != hash {
            let corrupt = StoreError::Corrupt { hash: hex(hash), actual: hex(&actual), path };
            if self.shared.is_none() {
                return Err(corrupt);
            }
            tracing::warn!(error = %corrupt, "replacing a damaged blob file with the farm's shared copy");
            let _ = fs::remove_file(self.path(hash));
            return self.fetch_shared(hash);
        }
        Ok(bytes)
    }

    /// Removes the blob named `hash`. Returns whether a file was there; a
    /// missing one is not an error (removal is idempotent, and a crash may
    /// already have lost or never made it).
    ///
    /// Callers remove a blob only once no row names it (see
    /// `Store::delete_job`). The directory is not fsynced: should the removal
    /// be lost in a crash, the file is an orphan, which is harmless. The
    /// shared copy goes too; other coordinators' cached files stay as
    /// orphans (nothing serves a blob no row names).
    pub fn remove(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let path = self.path(hash);
        let local = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err(&path, e)),
        };
        let shared = match &self.shared {
            Some(shared) => shared.remove(hash)?,
            None => false,
        };
        Ok(local || shared)
    }

    /// Every blob in the local directory, by name (for `tessera migrate`);
    /// files whose names are not blob names are skipped.
    pub fn local_hashes(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(|e| io_err(&self.root, e))? {
            let sub = entry.map_err(|e| io_err(&self.root, e))?.path();
            if !sub.is_dir() {
                continue;
            }
            for file in fs::read_dir(&sub).map_err(|e| io_err(&sub, e))? {
                let name = file.map_err(|e| io_err(&sub, e))?.file_name();
                if let Some(hash) = name.to_str().and_then(crate::support::parse_hash) {
                    out.push(hash);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Removes `<root>/*/.tmp-*`: writes a crash interrupted before rename.
    fn remove_temporaries(&self) -> Result<(), StoreError> {
        let entries = fs::read_dir(&self.root).map_err(|e| io_err(&self.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&self.root, e))?;
            let sub = entry.path();
            if !entry.file_type().map_err(|e| io_err(&sub, e))?.is_dir() {
                continue;
            }
            for file in fs::read_dir(&sub).map_err(|e| io_err(&sub, e))? {
                let file = file.map_err(|e| io_err(&sub, e))?;
                if file.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let path = file.path();
                    match fs::remove_file(&path) {
                        Ok(()) => tracing::debug!(path = %path.display(), "removed an interrupted blob write"),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&path, e)),
                    }
                }
            }
        }
        Ok(())
    }
}

/// Makes a directory's entries (a renamed or created file) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    // Windows cannot open a directory as a file; NTFS journals metadata.
    if cfg!(unix) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))?;
    }
    Ok(())
}

pub(super) fn io_err(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io { path: path.to_owned(), source }
}
