//! An output in a bucket (`--output s3://BUCKET/PREFIX`): the run works in a local scratch
//! folder as it would in a disk output, and this module carries what it writes to the bucket
//! at the points where a disk output makes it durable. Every other module names output files
//! by their scratch path; [`of`] says whether a path is mirrored, and to which key.
//!
//! What goes where:
//! - **Zarr chunks** never touch the scratch: each is one PUT, started at once on the I/O
//!   runtime with a bounded number of bytes in flight per case ([`Writes`]); the metadata
//!   documents (`zarr.json`) are held back and PUT after the chunks written before them, when
//!   the case is made durable ([`Writes::flush`], called where a disk output calls `syncfs`);
//! - **files written whole** (journal records, slab checkpoints, the manifest, tables, report,
//!   profile): written in the scratch as on a disk, then PUT before the call returns — a PUT is
//!   atomic, readers see the old object or the new one ([`put_file`]);
//! - **folders published by rename** (review and release exports): uploaded when published,
//!   files over [`MULTIPART_BYTES`] as multipart uploads, then dropped from the scratch but for
//!   their `.source` ([`publish_dir`]);
//! - **removals** delete the objects under the removed path ([`remove`]);
//! - **the manifest** is created with a conditional PUT (`If-None-Match: *`): of runs racing
//!   to create it, one wins ([`create_new`]);
//! - **a voided journal** (`--fresh`): its `run.json` is deleted first — records name their
//!   manifest's `run_id`, so without it none counts — after a tombstone object is PUT; the
//!   tombstone goes once what it covered is deleted ([`void`]).
//!
//! Invariants: the bucket is the truth. The scratch is what [`Mirror::pull`] brought when the
//! run took the output (the journal, the exports' `.source` files, the tables) plus what this process
//! wrote since; it is per process, removed when the process ends ([`Scratch`]), and a killed
//! process's is swept by the next. Nothing is published to the bucket before what it names:
//! a record's PUT follows the flush of its case's chunks.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::objects::{self, DELETES, GETS, HEADS, LISTS, PUT_BYTES, PUTS, runtime};

/// Files at least this large are uploaded in parts (S3's smallest part is 5 MiB).
pub const MULTIPART_BYTES: usize = 8 << 20;

/// Bytes of one case's chunk PUTs in flight at once.
pub const PUT_BYTES_IN_FLIGHT: u64 = 32 << 20;

/// Parts of a multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// What a case's uploads hold at most, counted in its memory budget: its chunk PUTs in flight,
/// and a multipart upload's parts (in flight, and the one being filled).
pub const UPLOAD_BYTES: u64 = PUT_BYTES_IN_FLIGHT + (PARTS_IN_FLIGHT as u64 + 1) * MULTIPART_BYTES as u64;

/// A bucket prefix and the local scratch folder mirrored to it.
pub struct Mirror {
    /// The scratch folder: the output directory the rest of slabflow sees.
    pub local: PathBuf,
    /// `s3://BUCKET/PREFIX`, as the user wrote it (for messages).
    pub url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Key,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mirror({} in {})", self.url, self.local.display())
    }
}

fn mirrors() -> &'static RwLock<Vec<Arc<Mirror>>> {
    static MIRRORS: RwLock<Vec<Arc<Mirror>>> = RwLock::new(Vec::new());
    &MIRRORS
}

/// The mirror holding `path` and the key of `path` relative to its prefix (`""` for the
/// root), or `None` for a path on no mirrored output.
pub fn of(path: &Path) -> Option<(Arc<Mirror>, String)> {
    let mirrors = mirrors().read().unwrap();
    let m = mirrors.iter().find(|m| path.starts_with(&m.local))?;
    let rel = path.strip_prefix(&m.local).ok()?.to_string_lossy().into_owned();
    Some((m.clone(), rel))
}

/// What to call `path` in a message: its URL when mirrored.
pub fn display(path: &Path) -> String {
    match of(path) {
        Some((m, rel)) if rel.is_empty() => m.url.clone(),
        Some((m, rel)) => format!("{}/{rel}", m.url),
        None => path.display().to_string(),
    }
}

/// `text` (a message) with every scratch folder named by its output's URL instead.
pub fn shown(text: &str) -> String {
    let mut out = text.to_string();
    for m in mirrors().read().unwrap().iter() {
        out = out.replace(&*m.local.to_string_lossy(), &m.url);
    }
    out
}

/// The scratch folders of this process, removed when it ends.
pub struct Scratch;

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in mirrors().read().unwrap().iter() {
            let _ = std::fs::remove_dir_all(&m.local);
        }
    }
}

/// Where scratch folders go: `SLABFLOW_SCRATCH`, or `slabflow-scratch` in the temp folder.
fn scratch_root() -> PathBuf {
    std::env::var_os("SLABFLOW_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("slabflow-scratch"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().replace(['-', '/'], "_")).unwrap_or_default()
}

/// Removes the scratch folders (`<host>-<pid>-…`) of this host's processes that have ended; a
/// scratch root shared by several hosts keeps theirs.
fn sweep_scratch(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let host = hostname();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut parts = name.split('-');
        let (Some(h), Some(pid)) = (parts.next(), parts.next().and_then(|p| p.parse::<u32>().ok())) else { continue };
        if h == host && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Makes `url` (`s3://BUCKET/PREFIX`) an output: checks the bucket answers (one LIST; a
/// missing bucket or refused credentials is an error naming the URL, and nothing is
/// written), makes a scratch folder for it, and pulls its journal. Returns the scratch path,
/// which the run then uses as its output directory. Attaching the same URL twice returns the
/// same folder.
pub fn attach(url: &Path) -> io::Result<PathBuf> {
    let text = url.to_string_lossy().trim_end_matches('/').to_string();
    if let Some(m) = mirrors().read().unwrap().iter().find(|m| m.url == text) {
        return Ok(m.local.clone());
    }
    let (store, prefix) = objects::locate(Path::new(&text))?;
    if prefix.as_ref().is_empty() {
        return Err(io::Error::other(format!(
            "{text}: an output needs a prefix in the bucket (s3://BUCKET/PREFIX), not the whole bucket"
        )));
    }
    // One LIST answers whether the bucket is there and takes our credentials.
    LISTS.fetch_add(1, Ordering::Relaxed);
    runtime().block_on(store.list_with_delimiter(Some(&prefix))).map_err(|e| objects::io_error(&text, e))?;
    let root = scratch_root();
    std::fs::create_dir_all(&root).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
    sweep_scratch(&root);
    let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let local = root.join(format!("{}-{}-{nonce:x}-{hash:016x}", hostname(), std::process::id()));
    let _ = std::fs::remove_dir_all(&local);
    std::fs::create_dir_all(&local).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", local.display())))?;
    let m = Arc::new(Mirror { local: local.clone(), url: text, store, prefix });
    mirrors().write().unwrap().push(m.clone());
    m.pull()?;
    Ok(local)
}

impl Mirror {
    fn key(&self, rel: &str) -> Key {
        let rel = rel.trim_matches('/');
        if rel.is_empty() {
            return self.prefix.clone();
        }
        // Keys as the store lists them; a name `parse` refuses is encoded part by part, still
        // under the prefix.
        Key::parse(format!("{}/{rel}", self.prefix.as_ref())).unwrap_or_else(|_| {
            self.prefix
                .parts()
                .chain(rel.split('/').filter(|p| !p.is_empty()).map(object_store::path::PathPart::from))
                .collect()
        })
    }

    /// The client and the key of `rel`: for readers that speak `object_store` themselves.
    pub fn object_store(&self, rel: &str) -> (Arc<dyn ObjectStore>, Key) {
        (self.store.clone(), self.key(rel))
    }

    fn url_of(&self, rel: &str) -> String {
        if rel.is_empty() { self.url.clone() } else { format!("{}/{rel}", self.url) }
    }

    fn err(&self, rel: &str) -> impl Fn(object_store::Error) -> io::Error + use<> {
        let url = self.url_of(rel);
        move |e| objects::io_error(&url, e)
    }

    /// The keys under `rel/` (relative to the prefix), with their sizes.
    pub fn list(&self, rel: &str) -> io::Result<Vec<(String, u64)>> {
        let key = self.key(rel);
        let base = self.prefix.as_ref().to_string();
        LISTS.fetch_add(1, Ordering::Relaxed);
        runtime().block_on(async {
            let mut out = Vec::new();
            let mut list = self.store.list(Some(&key));
            while let Some(meta) = list.next().await {
                let meta = meta.map_err(self.err(rel))?;
                let full = meta.location.as_ref();
                let r = full.strip_prefix(base.as_str()).unwrap_or(full).trim_start_matches('/');
                out.push((r.to_string(), meta.size));
            }
            Ok(out)
        })
    }

    /// The object at `rel`, or `None`.
    pub fn get(&self, rel: &str) -> io::Result<Option<Bytes>> {
        GETS.fetch_add(1, Ordering::Relaxed);
        let key = self.key(rel);
        runtime().block_on(async {
            match self.store.get(&key).await {
                Ok(r) => {
                    let b = r.bytes().await.map_err(self.err(rel))?;
                    objects::BYTES.fetch_add(b.len() as u64, Ordering::Relaxed);
                    Ok(Some(b))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err(rel)(e)),
            }
        })
    }

    /// The object at `rel` with its time and version (ETag): a `NotFound` error when absent.
    pub fn get_versioned(&self, rel: &str) -> io::Result<(Bytes, std::time::SystemTime, Option<String>)> {
        GETS.fetch_add(1, Ordering::Relaxed);
        let key = self.key(rel);
        runtime().block_on(async {
            match self.store.get(&key).await {
                Ok(r) => {
                    let meta = r.meta.clone();
                    let b = r.bytes().await.map_err(self.err(rel))?;
                    Ok((b, meta.last_modified.into(), meta.e_tag))
                }
                Err(e) => Err(self.err(rel)(e)),
            }
        })
    }

    /// PUTs `bytes` at `rel` if the object there is still version `e_tag` (`If-Match`):
    /// `Ok(false)` when it is not.
    pub fn put_if(&self, rel: &str, bytes: Bytes, e_tag: Option<String>) -> io::Result<bool> {
        let mode = PutMode::Update(object_store::UpdateVersion { e_tag, version: None });
        match runtime().block_on(put(&self.store, &self.key(rel), bytes, mode)) {
            Ok(()) => Ok(true),
            Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(rel)(e)),
        }
    }

    /// Checks once per process that the store honours `If-None-Match: *` (the lease and the
    /// manifest rest on it): an object created twice on that condition must be refused the
    /// second time. A store that ignores it (some older S3-compatible servers) would let two
    /// runs write one output: refused, with what to do.
    pub fn check_conditional_puts(&self) -> io::Result<()> {
        static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        let r = CHECKED.get_or_init(|| {
            let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
            let rel = format!(".slabflow.leases/.probe-{}-{nonce:x}", std::process::id());
            let first = self.put_new(&rel, Bytes::from_static(b"probe")).map_err(|e| e.to_string())?;
            let second = self.put_new(&rel, Bytes::from_static(b"probe")).map_err(|e| e.to_string())?;
            let _ = remove_file(&self.local.join(&rel));
            if first && !second {
                Ok(())
            } else {
                Err(format!(
                    "{}: the store does not honour conditional PUTs (If-None-Match: *), on which slabflow's one-run-per-output lease rests; use a store that does (AWS S3, MinIO, Ceph RGW, SeaweedFS), or a disk output",
                    self.url
                ))
            }
        });
        r.clone().map_err(io::Error::other)
    }

    /// Whether an object is at `rel` (a HEAD).
    pub fn exists(&self, rel: &str) -> io::Result<bool> {
        HEADS.fetch_add(1, Ordering::Relaxed);
        match runtime().block_on(self.store.head(&self.key(rel))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(rel)(e)),
        }
    }

    /// PUTs `bytes` at `rel`, replacing what is there.
    pub fn put(&self, rel: &str, bytes: Bytes) -> io::Result<()> {
        runtime().block_on(put(&self.store, &self.key(rel), bytes, PutMode::Overwrite)).map_err(self.err(rel))
    }

    /// PUTs `bytes` at `rel` unless an object is there (`If-None-Match: *`): `Ok(false)` then.
    pub fn put_new(&self, rel: &str, bytes: Bytes) -> io::Result<bool> {
        match runtime().block_on(put(&self.store, &self.key(rel), bytes, PutMode::Create)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.err(rel)(e)),
        }
    }

    /// Deletes the object at `rel` and every object under `rel/`: the listing streamed into
    /// bulk deletes (S3 `DeleteObjects`, up to 1,000 keys a request), never held whole.
    pub fn delete(&self, rel: &str) -> io::Result<()> {
        use futures::TryStreamExt;
        let key = self.key(rel);
        LISTS.fetch_add(1, Ordering::Relaxed);
        let listed = self.store.list(Some(&key)).map_ok(|m| m.location);
        let keys = futures::stream::once(futures::future::ready(Ok(key))).chain(listed).boxed();
        runtime().block_on(async {
            let mut deleted = self.store.delete_stream(keys);
            while let Some(r) = deleted.next().await {
                DELETES.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.err(rel)(e)),
                }
            }
            Ok(())
        })
    }

    /// Uploads the local file `path` to `rel`: one PUT, or a multipart upload when large.
    pub fn upload(&self, path: &Path, rel: &str) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let len = std::fs::metadata(path)?.len() as usize;
        if len < MULTIPART_BYTES {
            return self.put(rel, Bytes::from(std::fs::read(path)?));
        }
        let mut file = std::fs::File::open(path)?;
        let key = self.key(rel);
        runtime()
            .block_on(async {
                // object_store's BufWriter: parts of 8 MiB, two in flight, completed on shutdown.
                let mut w = object_store::buffered::BufWriter::with_capacity(self.store.clone(), key, MULTIPART_BYTES)
                    .with_max_concurrency(PARTS_IN_FLIGHT);
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = io::Read::read(&mut file, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(&buf[..n]).await?;
                    PUT_BYTES.fetch_add(n as u64, Ordering::Relaxed);
                }
                PUTS.fetch_add(len.div_ceil(MULTIPART_BYTES) as u64 + 2, Ordering::Relaxed);
                w.shutdown().await
            })
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.url_of(rel))))
    }

    /// Replaces the scratch's journal with the bucket's: `.slabflow/` and its tombstone, the
    /// `.source` of each review folder (what says an export is current) and the tables. Called when the
    /// output is attached and whenever the run takes it (the journal may have changed since).
    pub fn pull(&self) -> io::Result<()> {
        for dir in [".slabflow", ".slabflow.discarded"] {
            let _ = std::fs::remove_dir_all(self.local.join(dir));
        }
        let mut wanted: Vec<String> = Vec::new();
        for dir in [".slabflow", ".slabflow.discarded"] {
            wanted.extend(self.list(dir)?.into_iter().map(|(k, _)| k));
        }
        wanted.extend(self.list("review")?.into_iter().map(|(k, _)| k).filter(|k| k.ends_with("/.source")));
        // The tables at the top (what `report` reads).
        LISTS.fetch_add(1, Ordering::Relaxed);
        let top = runtime().block_on(self.store.list_with_delimiter(Some(&self.prefix))).map_err(self.err(""))?;
        let base = format!("{}/", self.prefix.as_ref());
        wanted.extend(
            top.objects
                .iter()
                .filter_map(|o| o.location.as_ref().strip_prefix(base.as_str()).map(str::to_string))
                .filter(|k| k.ends_with(".csv")),
        );
        runtime().block_on(async {
            let gets = futures::stream::iter(wanted).map(|rel| async move {
                GETS.fetch_add(1, Ordering::Relaxed);
                let bytes = match self.store.get(&self.key(&rel)).await {
                    Ok(r) => r.bytes().await.map_err(self.err(&rel))?,
                    Err(object_store::Error::NotFound { .. }) => return Ok(()), // gone since the listing
                    Err(e) => return Err(self.err(&rel)(e)),
                };
                let path = self.local.join(&rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, &bytes)
            });
            let results: Vec<io::Result<()>> = gets.buffer_unordered(16).collect().await;
            results.into_iter().collect::<io::Result<()>>()
        })
    }
}

async fn put(store: &Arc<dyn ObjectStore>, key: &Key, bytes: Bytes, mode: PutMode) -> object_store::Result<()> {
    PUTS.fetch_add(1, Ordering::Relaxed);
    PUT_BYTES.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let opts = PutOptions { mode, ..Default::default() };
    store.put_opts(key, PutPayload::from_bytes(bytes), opts).await.map(|_| ())
}

/// After a file is written whole at `path` in the scratch: PUT it (no-op off a mirror).
pub fn put_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match of(path) {
        Some((m, rel)) => m.put(&rel, Bytes::copy_from_slice(bytes)),
        None => Ok(()),
    }
}

/// Creates the object of `path` with `bytes` unless one is there: `Some(created)` on a mirror,
/// `None` off one (the caller creates the local file its own way).
pub fn create_new(path: &Path, bytes: &[u8]) -> io::Result<Option<bool>> {
    match of(path) {
        Some((m, rel)) => m.put_new(&rel, Bytes::copy_from_slice(bytes)).map(Some),
        None => Ok(None),
    }
}

/// After `path` is removed from the scratch: delete its objects (no-op off a mirror).
pub fn remove(path: &Path) -> io::Result<()> {
    match of(path) {
        Some((m, rel)) => m.delete(&rel),
        None => Ok(()),
    }
}

/// The names directly under `path` in the bucket (objects and "folders"), or `None` off a
/// mirror.
pub fn children(path: &Path) -> io::Result<Option<Vec<String>>> {
    let Some((m, rel)) = of(path) else { return Ok(None) };
    let under = if rel.is_empty() { String::new() } else { format!("{rel}/") };
    let mut names: Vec<String> = m
        .list(&rel)?
        .into_iter()
        .filter_map(|(k, _)| Some(k.strip_prefix(&under)?.split('/').next()?.to_string()))
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    Ok(Some(names))
}

/// The names in the folder `path`: in the bucket for a mirrored path, on disk otherwise (a
/// folder that does not exist has none).
pub fn list_dir(path: &Path) -> io::Result<Vec<String>> {
    if let Some(names) = children(path)? {
        return Ok(names);
    }
    match std::fs::read_dir(path) {
        Ok(entries) => Ok(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The bytes of the file `path`: from the bucket for a mirrored path, from disk otherwise.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    match of(path) {
        Some((m, rel)) => match m.get(&rel)? {
            Some(b) => Ok(b.to_vec()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: no such object", display(path)))),
        },
        None => std::fs::read(path),
    }
}

/// After the file `path` was removed from the scratch: delete its object, one request (no-op
/// off a mirror).
pub fn remove_file(path: &Path) -> io::Result<()> {
    let Some((m, rel)) = of(path) else { return Ok(()) };
    DELETES.fetch_add(1, Ordering::Relaxed);
    match runtime().block_on(m.store.delete(&m.key(&rel))) {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(m.err(&rel)(e)),
    }
}

/// Refreshes the scratch file `path` from the bucket (removed when the object is not there);
/// no-op off a mirror.
pub fn refresh(path: &Path) -> io::Result<()> {
    let Some((m, rel)) = of(path) else { return Ok(()) };
    match m.get(&rel)? {
        Some(b) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, &b)
        }
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// Whether `path` exists: in the bucket for a mirrored path (a HEAD), on disk otherwise.
pub fn exists(path: &Path) -> io::Result<bool> {
    match of(path) {
        Some((m, rel)) => m.exists(&rel),
        None => Ok(path.exists()),
    }
}

/// After the scratch folder `dir` was published (renamed into place): upload its files under
/// its key — what was under the key before is deleted first — then drop them from the scratch
/// but for `.source` (what later runs compare). No-op off a mirror.
pub fn publish_dir(partial: &Path, dir: &Path) -> io::Result<()> {
    let Some((m, rel)) = of(dir) else { return Ok(()) };
    m.delete(&rel)?;
    // What was PUT of the folder while it was being made (its `.source`) goes.
    if let Some((_, partial_rel)) = of(partial) {
        m.delete(&partial_rel)?;
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    // `.source` last: an export whose `.source` is in the bucket is whole.
    files.sort_by_key(|p| p.file_name().is_some_and(|n| n == ".source"));
    for f in &files {
        let r = f.strip_prefix(&m.local).map_err(io::Error::other)?.to_string_lossy().into_owned();
        m.upload(f, &r)?;
    }
    for f in files.iter().filter(|f| f.file_name().is_none_or(|n| n != ".source")) {
        std::fs::remove_file(f)?;
    }
    Ok(())
}

/// Voids the journal folder `dir` of a mirrored output before what it recorded is deleted:
/// a tombstone object (`<dir>.discarded/VOID`) first, so an interrupted discard is finished
/// by the next run, then the manifest (`run.json`: records of no manifest count for none),
/// then the rest of `dir`. No-op off a mirror.
pub fn void(dir: &Path, tomb: &Path) -> io::Result<()> {
    let (Some((m, rel)), Some((_, tomb_rel))) = (of(dir), of(tomb)) else { return Ok(()) };
    m.put(&format!("{tomb_rel}/VOID"), Bytes::from_static(b"a discard in progress: run again to finish it\n"))?;
    m.delete(&format!("{rel}/run.json"))?;
    m.delete(&rel)
}

/// A case's chunk writes to a bucket: each PUT started at once on the I/O runtime, at most
/// [`PUT_BYTES_IN_FLIGHT`] bytes of them in flight (the writer waits for room); the metadata
/// documents held back until [`Writes::flush`], which waits for every PUT and then writes them.
/// A failed PUT fails every later call (the case is then failed, and its data removed after
/// [`Writes::drain`]).
pub struct Writes {
    mirror: Arc<Mirror>,
    /// Room for bytes in flight, in KiB.
    room: Arc<tokio::sync::Semaphore>,
    state: Mutex<State>,
    /// Metadata documents to write at the next flush: (rel, bytes); a later one replaces.
    held: Mutex<Vec<(String, Bytes)>>,
}

#[derive(Default)]
struct State {
    running: Vec<tokio::task::JoinHandle<io::Result<()>>>,
    /// The first error of a PUT: kept, so that no later flush can miss it.
    failed: Option<(io::ErrorKind, String)>,
}

impl State {
    /// Collects the PUTs that have finished (their first error kept).
    fn reap(&mut self) {
        let (done, live): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.running).into_iter().partition(|t| t.is_finished());
        self.running = live;
        for t in done {
            self.record(runtime().block_on(t));
        }
    }

    fn record(&mut self, r: Result<io::Result<()>, tokio::task::JoinError>) {
        let e = match r {
            Ok(Ok(())) => return,
            Ok(Err(e)) => (e.kind(), e.to_string()),
            Err(e) => (io::ErrorKind::Other, e.to_string()),
        };
        self.failed.get_or_insert(e);
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }
}

const ROOM_UNIT: u64 = 1024;

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Writes(to {}, {} running)", self.mirror.url, self.state.lock().unwrap().running.len())
    }
}

impl Writes {
    pub fn new(mirror: Arc<Mirror>) -> Writes {
        Writes {
            mirror,
            room: Arc::new(tokio::sync::Semaphore::new((PUT_BYTES_IN_FLIGHT / ROOM_UNIT) as usize)),
            state: Mutex::new(State::default()),
            held: Mutex::new(Vec::new()),
        }
    }

    pub fn mirror(&self) -> &Arc<Mirror> {
        &self.mirror
    }

    /// Starts the PUT of `bytes` at `rel` (relative to the mirror's prefix), once there is room.
    pub fn put(&self, rel: String, bytes: Bytes) -> io::Result<()> {
        {
            let mut st = self.state.lock().unwrap();
            st.reap();
            st.check()?;
        }
        let units = (bytes.len() as u64).div_ceil(ROOM_UNIT).clamp(1, PUT_BYTES_IN_FLIGHT / ROOM_UNIT) as u32;
        let permit = runtime()
            .block_on(self.room.clone().acquire_many_owned(units))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (store, key, url) = (self.mirror.store.clone(), self.mirror.key(&rel), self.mirror.url_of(&rel));
        let task = runtime().spawn(async move {
            let r = put(&store, &key, bytes, PutMode::Overwrite).await.map_err(|e| objects::io_error(&url, e));
            drop(permit);
            r
        });
        self.state.lock().unwrap().running.push(task);
        Ok(())
    }

    /// Holds the metadata document at `rel` back until the next flush.
    pub fn hold(&self, rel: String, bytes: Bytes) {
        let mut held = self.held.lock().unwrap();
        held.retain(|(r, _)| *r != rel);
        held.push((rel, bytes));
    }

    /// Whether a document is held back at `rel`.
    pub fn holds(&self, rel: &str) -> bool {
        self.held.lock().unwrap().iter().any(|(r, _)| r == rel)
    }

    /// Waits for the PUTs started so far (a `put` racing this call is either among them or
    /// starts after), then writes the held metadata documents: on return, all this case wrote
    /// before the call is in the bucket — or the first error of any PUT says what is not.
    pub fn flush(&self) -> io::Result<()> {
        let running = std::mem::take(&mut self.state.lock().unwrap().running);
        for t in running {
            let r = runtime().block_on(t);
            self.state.lock().unwrap().record(r);
        }
        self.state.lock().unwrap().check()?;
        let held: Vec<_> = std::mem::take(&mut *self.held.lock().unwrap());
        let m = &self.mirror;
        runtime().block_on(async {
            let puts = futures::stream::iter(held).map(|(rel, bytes)| async move {
                put(&m.store, &m.key(&rel), bytes, PutMode::Overwrite).await.map_err(m.err(&rel))
            });
            let results: Vec<io::Result<()>> = puts.buffer_unordered(16).collect().await;
            results.into_iter().collect::<io::Result<()>>()
        })
    }

    /// For a case that failed or stopped: waits for its PUTs in flight (so none lands after its
    /// data is removed) and drops the held metadata.
    pub fn drain(&self) {
        let running = std::mem::take(&mut self.state.lock().unwrap().running);
        for t in running {
            let _ = runtime().block_on(t);
        }
        self.held.lock().unwrap().clear();
    }
}
