//! Making files durable, and publishing them only once they are.
//!
//! Invariants:
//! - [`write_atomic`] leaves the old file or the new one, never a torn one, even after a power
//!   loss; its temp file is hidden (`.<name>.tmp-<pid>`), and [`sweep_temp_files`] removes what
//!   a killed process left of them;
//! - a directory made by [`create_dir_durable`] is in its parent for good before it returns;
//! - on a bucket output ([`super::mirror`]) each write, removal and published folder is
//!   carried to the bucket before the call returns, and [`CaseSync`] waits for a case's PUTs;
//! - [`CaseSync`] opens one descriptor per filesystem a case writes to *before* its first write
//!   and keeps it: Linux reports a filesystem's writeback error to every descriptor opened
//!   before it (errseq), once per descriptor, so a case's `syncfs` sees every error since the
//!   case began, and no other case's `syncfs` can consume it. The price: an error on the
//!   filesystem fails every case writing at the time, since `syncfs` cannot say whose pages
//!   failed.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The temp file [`write_atomic`] writes `path` through: hidden, and unique per process.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.rsplit_once(".tmp-").is_some_and(|(_, pid)| pid.parse::<u32>().is_ok())
}

/// temp file + fsync + rename + fsync of the directory: a reader sees the old file or the new
/// one, never half of one, even after a power loss.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_parent(path)?;
    // On a bucket output, the object too (a PUT is atomic as the rename is).
    super::mirror::put_file(path, bytes)
}

/// Publishes the folder `partial` as `done` (which must not exist): one durable rename, and
/// on a bucket output the upload of its files ([`super::mirror::publish_dir`]).
pub fn publish_dir(partial: &Path, done: &Path) -> std::io::Result<()> {
    std::fs::rename(partial, done)?;
    sync_parent(done)?;
    super::mirror::publish_dir(partial, done)
}

/// fsync of the directory holding `path`: makes a rename, create or unlink in it durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// fsync of a directory.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `mkdir -p`, each directory it makes fsynced into its parent.
pub fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_parent(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a file or a directory tree if it exists (absent is fine).
pub fn remove_path(path: &Path) -> std::io::Result<()> {
    let mut file = false;
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => {
            file = true;
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        r => r?,
    }
    // On a bucket output, its objects too: a file of the scratch is one object; anything
    // else (a folder, or what only the bucket holds, as chunks) everything under its key.
    if file { super::mirror::remove_file(path) } else { super::mirror::remove(path) }
}

/// Removes the temp files killed processes left in `dir` (not recursive; a missing `dir` is
/// fine). Call it only while holding the lock of what `dir` belongs to.
pub fn sweep_temp_files(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if is_temp_name(&e.file_name().to_string_lossy()) {
            remove_path(&e.path())?;
        }
    }
    Ok(())
}

/// Flushes every dirty page of the filesystems a case writes to (Linux `syncfs`): one call
/// per filesystem makes a whole case durable, instead of an fsync per chunk file.
#[derive(Debug)]
pub struct CaseSync {
    /// One open directory per filesystem (by device), opened before the case's first write.
    fds: Vec<(u64, PathBuf, File)>,
    /// On a bucket output: the case's chunk PUTs, waited for instead of a `syncfs`.
    writes: Option<std::sync::Arc<super::mirror::Writes>>,
}

impl CaseSync {
    /// Opens the existing directories among `dirs`, one per filesystem.
    pub fn open(dirs: &[&Path]) -> std::io::Result<CaseSync> {
        let mut fds: Vec<(u64, PathBuf, File)> = Vec::new();
        let mut writes = None;
        for dir in dirs {
            if let Some((m, _)) = super::mirror::of(dir) {
                writes.get_or_insert_with(|| std::sync::Arc::new(super::mirror::Writes::new(m)));
                continue;
            }
            let f = match File::open(dir) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let dev = f.metadata()?.dev();
            if !fds.iter().any(|(d, _, _)| *d == dev) {
                fds.push((dev, dir.to_path_buf(), f));
            }
        }
        Ok(CaseSync { fds, writes })
    }

    /// The case's writes to a bucket output (`None` on a disk).
    pub fn writes(&self) -> Option<&std::sync::Arc<super::mirror::Writes>> {
        self.writes.as_ref()
    }

    /// For a case that failed or stopped, before its data is removed: on a bucket output,
    /// waits for its PUTs in flight, so that none lands after the removal.
    pub fn drain(&self) {
        if let Some(w) = &self.writes {
            w.drain();
        }
    }

    /// `syncfs` on each filesystem, and on a bucket output the wait for every PUT of the
    /// case; an error names the directory (or the output's URL).
    pub fn sync(&self) -> Result<(), (PathBuf, std::io::Error)> {
        if let Some(w) = &self.writes {
            w.flush().map_err(|e| (PathBuf::from(&w.mirror().url), e))?;
        }
        for (_, dir, f) in &self.fds {
            // SAFETY: a valid, open file descriptor for the duration of the call.
            let r = unsafe { libc::syncfs(f.as_raw_fd()) };
            if r != 0 {
                return Err((dir.clone(), std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_hidden_per_process_and_swept() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("metrics.csv");
        write_atomic(&p, b"a").unwrap();
        let tmp = temp_path(&p);
        assert!(tmp.file_name().unwrap().to_string_lossy().starts_with(".metrics.csv.tmp-"));
        std::fs::write(&tmp, b"left by a killed run").unwrap();
        std::fs::write(t.path().join(".hidden"), b"not ours").unwrap();
        sweep_temp_files(t.path()).unwrap();
        assert!(!tmp.exists());
        assert!(t.path().join(".hidden").exists() && p.exists());
    }

    #[test]
    fn durable_dirs_and_one_descriptor_per_filesystem() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/c");
        create_dir_durable(&d).unwrap();
        assert!(d.is_dir());
        let s = CaseSync::open(&[t.path(), &d, &t.path().join("missing")]).unwrap();
        assert_eq!(s.fds.len(), 1);
        s.sync().unwrap();
    }
}
