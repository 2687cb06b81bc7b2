//! [`SlabStore`]: the filesystem store the case groups are written through.
//!
//! zarrs' `FilesystemStore` (zarrs_filesystem 0.3) fsyncs every file it writes: some 600
//! fsyncs per full-size case of the contract pipeline, ~0.4 s of blocked threads (`strace -c`).
//! slabflow makes a case durable once instead, with one `syncfs` before its journal record or
//! slab checkpoint names its data (`crate::checkpoint`), so this store writes plain files.
//! Keys map to the same paths as `FilesystemStore`'s (`<base>/<key>`), so any Zarr reader opens
//! the result.
//!
//! Invariants: a write replaces the whole file; a fresh store (a new case group, no files from
//! earlier runs) treats erasing a key it never wrote as done, which saves a failing `unlink` for
//! every all-fill-value chunk; a store over an existing group (a resumed case) erases for real.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use zarrs::storage::{Bytes, OffsetBytesIterator, StorageError, StoreKey, StorePrefix, WritableStorageTraits};

pub struct SlabStore {
    base: PathBuf,
    /// No files under `base` but those this store wrote.
    fresh: bool,
    /// Directories known to exist, and (when fresh) the keys written.
    dirs: Mutex<HashSet<PathBuf>>,
    written: Mutex<HashSet<String>>,
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::IOError(Arc::new(e))
}

impl SlabStore {
    pub fn new(base: &Path, fresh: bool) -> SlabStore {
        SlabStore {
            base: base.to_owned(),
            fresh,
            dirs: Mutex::new(HashSet::new()),
            written: Mutex::new(HashSet::new()),
        }
    }

    fn ensure_dir(&self, dir: &Path) -> Result<(), StorageError> {
        if self.dirs.lock().unwrap().contains(dir) {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        self.dirs.lock().unwrap().insert(dir.to_owned());
        Ok(())
    }
}

impl WritableStorageTraits for SlabStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let path = self.base.join(key.as_str());
        if let Some(parent) = path.parent() {
            self.ensure_dir(parent)?;
        }
        let mut file = std::fs::File::create(&path).map_err(io)?;
        std::io::Write::write_all(&mut file, &value).map_err(io)?;
        start_writeback(&file);
        if self.fresh {
            self.written.lock().unwrap().insert(key.as_str().to_owned());
        }
        Ok(())
    }

    fn set_partial_many(&self, _key: &StoreKey, _offset_values: OffsetBytesIterator) -> Result<(), StorageError> {
        Err(StorageError::Unsupported("slabflow writes whole chunks only".into()))
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        if self.fresh && !self.written.lock().unwrap().remove(key.as_str()) {
            return Ok(());
        }
        match std::fs::remove_file(self.base.join(key.as_str())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.written.lock().unwrap().retain(|k| !k.starts_with(prefix.as_str()));
        match std::fs::remove_dir_all(self.base.join(prefix.as_str())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }

    fn supports_set_partial(&self) -> bool {
        false
    }
}

/// Starts writing the file's pages to disk without waiting (Linux `sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`): the `syncfs` that makes the case durable then finds most of it
/// done instead of flushing the whole case at its end.
fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid, open descriptor; the call only schedules I/O. Failure is harmless (the
    // later syncfs still flushes everything), so its result is ignored.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}
