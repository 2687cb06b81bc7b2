//! [`SlabStore`]: the filesystem store the case groups are written through.
//!
//! zarrs' `FilesystemStore` (zarrs_filesystem 0.3) fsyncs every file it writes: some 600
//! fsyncs per full-size case of the contract pipeline, ~0.4 s of blocked threads (`strace -c`).
//! slabflow makes a case durable once instead, with one `syncfs` before its journal record or
//! slab checkpoint names its data (`crate::checkpoint`), so this store writes plain files.
//! Keys map to the same paths as `FilesystemStore`'s (`<base>/<key>`), so any Zarr reader opens
//! the result.
//!
//! On a bucket output ([`crate::files::mirror`]) the case group is written through
//! [`BucketStore`] instead: one PUT per chunk, in flight while the next slabs are computed,
//! and the metadata documents held back until the case is made durable (after the chunks
//! written before them). [`OutStore`] is either.
//!
//! Invariants: a write replaces the whole file; a fresh store (a new case group, no files from
//! earlier runs) treats erasing a key it never wrote as done, which saves a failing `unlink` for
//! every all-fill-value chunk; a store over an existing group (a resumed case) erases for real.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::files::mirror::Writes;

use zarrs::storage::{
    Bytes, OffsetBytesIterator, ReadableStorageTraits, StorageError, StoreKey, StorePrefix, WritableStorageTraits,
};

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

/// A case group in a bucket: chunk PUTs through the case's [`Writes`].
pub struct BucketStore {
    writes: Arc<Writes>,
    /// The group's key relative to the output's prefix.
    base: String,
    /// No objects under `base` but those this store wrote.
    fresh: bool,
    written: Mutex<HashSet<String>>,
}

impl BucketStore {
    fn rel(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }
}

/// Where a case group is written: files on a disk, or objects in a bucket.
pub enum OutStore {
    Disk(SlabStore),
    Bucket(BucketStore),
}

impl OutStore {
    /// The store for the group at `dir`: a bucket one when `dir` is on a bucket output (its
    /// PUTs go through `writes`, the case's).
    pub fn new(dir: &Path, fresh: bool, writes: Option<&Arc<Writes>>) -> OutStore {
        match (crate::files::mirror::of(dir), writes) {
            (Some((_, base)), Some(w)) => {
                OutStore::Bucket(BucketStore { writes: w.clone(), base, fresh, written: Mutex::new(HashSet::new()) })
            }
            _ => OutStore::Disk(SlabStore::new(dir, fresh)),
        }
    }

    /// Whether the group holds `key` (e.g. `liver/zarr.json`); a bucket that cannot be asked
    /// is an error.
    pub fn has(&self, key: &str) -> std::io::Result<bool> {
        match self {
            OutStore::Disk(s) => Ok(s.base.join(key).is_file()),
            OutStore::Bucket(b) => {
                let rel = b.rel(key);
                if b.writes.holds(&rel) || b.written.lock().unwrap().contains(key) {
                    return Ok(true);
                }
                if b.fresh { Ok(false) } else { b.writes.mirror().exists(&rel) }
            }
        }
    }
}

impl WritableStorageTraits for OutStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        match self {
            OutStore::Disk(s) => s.set(key, value),
            OutStore::Bucket(b) => {
                let rel = b.rel(key.as_str());
                b.written.lock().unwrap().insert(key.as_str().to_owned());
                if key.as_str() == "zarr.json" || key.as_str().ends_with("/zarr.json") {
                    b.writes.hold(rel, value);
                    Ok(())
                } else {
                    b.writes.put(rel, value).map_err(io)
                }
            }
        }
    }

    fn set_partial_many(&self, key: &StoreKey, offset_values: OffsetBytesIterator) -> Result<(), StorageError> {
        match self {
            OutStore::Disk(s) => s.set_partial_many(key, offset_values),
            OutStore::Bucket(_) => Err(StorageError::Unsupported("slabflow writes whole chunks only".into())),
        }
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        match self {
            OutStore::Disk(s) => s.erase(key),
            OutStore::Bucket(b) => {
                if !b.written.lock().unwrap().remove(key.as_str()) && b.fresh {
                    return Ok(());
                }
                b.writes.mirror().delete(&b.rel(key.as_str())).map_err(io)
            }
        }
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        match self {
            OutStore::Disk(s) => s.erase_prefix(prefix),
            OutStore::Bucket(b) => {
                b.written.lock().unwrap().retain(|k| !k.starts_with(prefix.as_str()));
                b.writes.mirror().delete(b.rel(prefix.as_str()).trim_end_matches('/')).map_err(io)
            }
        }
    }

    fn supports_set_partial(&self) -> bool {
        false
    }
}

/// A Zarr group to read, on a disk or in a bucket output (through `zarrs_object_store`, its
/// requests run on the I/O runtime by zarrs' async-to-sync adapter).
pub fn readable(dir: &Path) -> Result<Arc<dyn ReadableStorageTraits>, String> {
    use zarrs::storage::storage_adapter::async_to_sync::{AsyncToSyncBlockOn, AsyncToSyncStorageAdapter};
    struct BlockOn;
    impl AsyncToSyncBlockOn for BlockOn {
        fn block_on<F: core::future::Future>(&self, future: F) -> F::Output {
            crate::files::objects::runtime().block_on(future)
        }
    }
    match crate::files::mirror::of(dir) {
        Some((m, rel)) => {
            let (store, key) = m.object_store(&rel);
            let prefixed = object_store::prefix::PrefixStore::new(store, key);
            let store = Arc::new(zarrs_object_store::AsyncObjectStore::new(prefixed));
            Ok(Arc::new(AsyncToSyncStorageAdapter::new(store, BlockOn)))
        }
        None => {
            Ok(Arc::new(zarrs::filesystem::FilesystemStore::new(dir).map_err(|e| format!("{}: {e}", dir.display()))?))
        }
    }
}
