//! Content-addressed blob files: scenes, guest modules, frames.
//!
//! A blob lives at `<root>/<first 2 hex digits>/<64 hex digits>` of its
//! blake3 hash (DESIGN.md invariant 3). Two levels keep directories small
//! with millions of blobs.
//!
//! **Invariant:** a file at a blob's final path is complete. Writes go to a
//! temporary file in the same directory, which is fsynced, renamed into place
//! and then the directory fsynced, so a crash leaves either no file or the
//! whole blob, never a torn one. Readers rehash what they read anyway, since
//! disks and people do alter files.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::{hex, StoreError};

/// Prefix of the temporary files [`Blobs::put`] writes before renaming them.
const TEMP_PREFIX: &str = ".tmp-";

/// The blob directory. Cheap to clone and `Send + Sync`: unlike the database
/// connection, blobs can be read and written from any thread (an HTTP handler
/// serving a frame need not queue behind the store thread).
#[derive(Clone, Debug)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    /// Opens (creating it if needed) the blob directory at `root`, and removes
    /// temporary files that a crash left behind mid-write.
    pub fn open(root: &Path) -> Result<Blobs, StoreError> {
        fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
        let blobs = Blobs { root: root.to_owned() };
        blobs.remove_temporaries()?;
        Ok(blobs)
    }

    /// The directory that holds the blobs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob named `hash` lives (whether or not it exists).
    pub fn path(&self, hash: &[u8; 32]) -> PathBuf {
        let name = hex(hash);
        self.root.join(&name[..2]).join(name)
    }

    /// Whether the blob named `hash` is stored. Does not read or check it.
    pub fn has(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let path = self.path(hash);
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// Stores `bytes` and returns their blake3 hash, its name.
    ///
    /// Durable on return: the data and the directory entry are fsynced. If a
    /// file of the same length is already stored under the hash, nothing is
    /// written (content addressing makes it the same blob); a file of another
    /// length (damaged) is replaced.
    pub fn put(&self, bytes: &[u8]) -> Result<[u8; 32], StoreError> {
        let hash = *blake3::hash(bytes).as_bytes();
        let path = self.path(&hash);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == bytes.len() as u64 => return Ok(hash),
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
        Ok(hash)
    }

    /// Reads the blob named `hash`, checking that its bytes still hash to it.
    ///
    /// A missing blob is [`StoreError::NotFound`]; one whose bytes changed on
    /// disk is [`StoreError::Corrupt`].
    pub fn get(&self, hash: &[u8; 32]) -> Result<Vec<u8>, StoreError> {
        let path = self.path(hash);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(format!("blob {}", hex(hash))))
            }
            Err(e) => return Err(io_err(&path, e)),
        };
        let actual = *blake3::hash(&bytes).as_bytes();
        if &actual != hash {
            return Err(StoreError::Corrupt { hash: hex(hash), actual: hex(&actual), path });
        }
        Ok(bytes)
    }

    /// Removes the blob named `hash`. Returns whether a file was there; a
    /// missing one is not an error (removal is idempotent, and a crash may
    /// already have lost or never made it).
    ///
    /// Callers remove a blob only once no row names it (see
    /// `Store::delete_job`). The directory is not fsynced: should the removal
    /// be lost in a crash, the file is an orphan, which is harmless.
    pub fn remove(&self, hash: &[u8; 32]) -> io::Result<bool> {
        match fs::remove_file(self.path(hash)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
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
