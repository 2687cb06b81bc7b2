//! Files in a bucket: a root named `s3://bucket/prefix` (AWS or any S3-compatible store) stays a
//! path whose text is the URL — `Path::new("s3://b/p").join("case/ct.nii.gz")` names an object
//! as a local path names a file — and the functions here answer for such paths what `std::fs`
//! answers for local ones: listing, size and time, a streaming read. Local paths (and `file://`
//! URLs, see [`local`]) are not handled here.
//!
//! Credentials, region and endpoint come from the standard AWS environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`…), read by `object_store`'s
//! `AmazonS3Builder::from_env`; an `http://` endpoint is allowed (a store on the local network).
//!
//! Invariants:
//! - one tokio runtime per process, for this I/O only ([`runtime`]); callers are plain threads
//!   that block on it, so the CPU stages never run on it;
//! - a read streams: the object's bytes arrive in range GETs of [`SEGMENT_BYTES`], each body
//!   passed on as it arrives through a bounded channel of chunks ([`CHUNKS_IN_FLIGHT`]) —
//!   never the whole object in memory or on disk, and no request open for the length of a
//!   case; `object_store` retries each on transient failures (5xx, timeouts, resets, a store
//!   restarting) with backoff for about a minute and resumes one cut mid-body with a range
//!   request for the rest; each asks for the version (ETag) the listing saw;
//! - a root is listed once per process ([`Listing`]): discovery, templates and stamps answer
//!   from that listing, as the corpus was when the run began; an `http(s)://` mirror cannot be
//!   listed, so its files are asked for one by one (a HEAD each, kept for the run).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

/// Bytes per range GET while an object streams: a request per 16 MiB keeps each short (a case
/// may stream for minutes) at one round trip per 16 MiB.
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// Chunks of a GET's body in flight between the network and the reader. Measured on a
/// full-size case (28 objects, 121 MB) from SeaweedFS on loopback: 16 read as fast as the
/// local disk, 8 and 4 were 5–10 % slower for 18 and 29 MiB less.
pub const CHUNKS_IN_FLIGHT: usize = 16;

/// What one object being read holds, for the memory budget: its chunks in flight and the HTTP
/// client's buffers. The same case peaked 74 MiB higher from the bucket than from disk, 2.6 MiB
/// per object.
pub const READER_BYTES: u64 = 3 << 20;

/// Requests made to object storage by this process, and the bytes its GETs brought.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Requests {
    pub gets: u64,
    pub heads: u64,
    pub lists: u64,
    pub bytes: u64,
    /// PUTs (a multipart upload counts one per part) and objects deleted, of a bucket output.
    pub puts: u64,
    pub deletes: u64,
    /// The bytes PUT.
    pub put_bytes: u64,
}

pub(crate) static GETS: AtomicU64 = AtomicU64::new(0);
pub(crate) static HEADS: AtomicU64 = AtomicU64::new(0);
pub(crate) static LISTS: AtomicU64 = AtomicU64::new(0);
pub(crate) static BYTES: AtomicU64 = AtomicU64::new(0);
pub(crate) static PUTS: AtomicU64 = AtomicU64::new(0);
pub(crate) static DELETES: AtomicU64 = AtomicU64::new(0);
pub(crate) static PUT_BYTES: AtomicU64 = AtomicU64::new(0);

/// The requests so far.
pub fn requests() -> Requests {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Requests {
        gets: l(&GETS),
        heads: l(&HEADS),
        lists: l(&LISTS),
        bytes: l(&BYTES),
        puts: l(&PUTS),
        deletes: l(&DELETES),
        put_bytes: l(&PUT_BYTES),
    }
}

/// Whether `path` names an object (`s3://…`, or `http(s)://…` on a read-only mirror).
pub fn is_object(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.starts_with("s3://")) || is_http(path)
}

/// Whether `path` is on an HTTP(S) mirror: read-only, and not listable.
pub fn is_http(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"))
}

/// A root as given (`--input`, `[input] root`): a `file://` URL becomes its local path; other
/// text is kept as it is.
pub fn local(root: &str) -> PathBuf {
    PathBuf::from(root.strip_prefix("file://").unwrap_or(root))
}

/// The process's runtime for object I/O: two worker threads (requests wait on the network, not
/// on the CPU).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("slabflow-io")
            .enable_all()
            .build()
            .expect("a tokio runtime starts")
    })
}

/// The bucket of `path` and the object's key in it.
pub(crate) fn locate(path: &Path) -> io::Result<(Arc<dyn ObjectStore>, Key)> {
    let text = path.to_str().ok_or_else(|| io::Error::other(format!("{}: not UTF-8", path.display())))?;
    if let Some((scheme, rest)) = text.split_once("://").filter(|(s, _)| *s == "http" || *s == "https") {
        let (host, key) = rest.split_once('/').unwrap_or((rest, ""));
        let key = Key::parse(key.trim_matches('/')).map_err(|e| io::Error::other(format!("{text}: {e}")))?;
        return Ok((http_store(&format!("{scheme}://{host}"))?, key));
    }
    let rest = text.strip_prefix("s3://").ok_or_else(|| io::Error::other(format!("{text}: not an s3:// URL")))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(io::Error::other(format!("{text}: no bucket; write s3://BUCKET/PREFIX")));
    }
    // Keys as the store lists them (`parse`, not `from`, which would percent-encode `[`, `%`…).
    let key = Key::parse(key.trim_matches('/')).map_err(|e| io::Error::other(format!("{text}: {e}")))?;
    Ok((bucket_store(bucket)?, key))
}

/// How requests are retried.
fn retry_config() -> object_store::RetryConfig {
    // Transient failures (5xx, 429, resets, a server restarting) are retried 12 times with
    // jittered backoff from 0.5 s (each wait drawn up to 3× the one before, at most 15 s): at
    // least 6 s in all, a minute or two as a rule — longer than a store takes to restart.
    // (object_store's default, 10 retries from 0.1 s, gave up on a SeaweedFS restart in 3.9 s.)
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(500),
            max_backoff: std::time::Duration::from_secs(15),
            base: 3.0,
        },
        max_retries: 12,
        retry_timeout: std::time::Duration::from_secs(180),
    }
}

/// One client per HTTP origin.
fn http_store(origin: &str) -> io::Result<Arc<dyn ObjectStore>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut stores = STORES.get_or_init(Default::default).lock().unwrap();
    if let Some(s) = stores.get(origin) {
        return Ok(s.clone());
    }
    let store: Arc<dyn ObjectStore> = Arc::new(
        object_store::http::HttpBuilder::new()
            .with_url(origin)
            .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
            .with_retry(retry_config())
            .build()
            .map_err(|e| io::Error::other(format!("{origin}: {e}")))?,
    );
    stores.insert(origin.to_string(), store.clone());
    Ok(store)
}

/// One client per bucket, made from the AWS environment.
fn bucket_store(bucket: &str) -> io::Result<Arc<dyn ObjectStore>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut stores = STORES.get_or_init(Default::default).lock().unwrap();
    if let Some(s) = stores.get(bucket) {
        return Ok(s.clone());
    }
    let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry_config());
    let endpoint = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).unwrap_or_default();
    if !endpoint.is_empty() {
        b = b.with_endpoint(&endpoint);
    }
    if endpoint.starts_with("http://") {
        b = b.with_allow_http(true);
    }
    // Against an endpoint of its own (MinIO, Ceph, SeaweedFS…) a store has no instance
    // metadata service to ask for credentials: without keys, say so instead of asking AWS's.
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let anonymous = std::env::var("AWS_SKIP_SIGNATURE").is_ok_and(|v| v == "true");
    if !endpoint.is_empty() && !set("AWS_ACCESS_KEY_ID") && !anonymous && !set("AWS_WEB_IDENTITY_TOKEN_FILE") {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "s3://{bucket}: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_SKIP_SIGNATURE=true for a public bucket)"
            ),
        ));
    }
    let store: Arc<dyn ObjectStore> = Arc::new(b.build().map_err(|e| io::Error::other(format!("s3://{bucket}: {e}")))?);
    stores.insert(bucket.to_string(), store.clone());
    Ok(store)
}

/// An `object_store` error as an I/O error naming `url`, with what to do for the usual ones
/// (the S3 error code of the response, when there is one, says which).
pub(crate) fn io_error(url: &str, e: object_store::Error) -> io::Error {
    use io::ErrorKind as K;
    let text = e.to_string();
    let code = text.split("<Code>").nth(1).and_then(|r| r.split("</Code>").next()).unwrap_or("");
    let credentials = "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL";
    let (kind, msg) = match (&e, code) {
        (object_store::Error::NotFound { .. }, "NoSuchBucket") | (_, "NoSuchBucket") => {
            (K::NotFound, "no such bucket; check the URL and AWS_ENDPOINT_URL".to_string())
        }
        (object_store::Error::NotFound { .. }, _) => (K::NotFound, "no such object".to_string()),
        (object_store::Error::Precondition { .. }, _) => {
            (K::Other, "the object changed while it was read (a new version); run again".to_string())
        }
        (_, "SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied") => {
            (K::PermissionDenied, format!("access denied ({code}); {credentials}"))
        }
        (object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }, _) => {
            (K::PermissionDenied, format!("access denied; {credentials}"))
        }
        _ if text.contains("169.254.169.254") || text.contains("Missing AccessKeyId") => {
            (K::PermissionDenied, format!("no credentials found; {credentials}"))
        }
        // A server error after the retries: its code and message, not the XML.
        _ if !code.is_empty() => {
            let message = text.split("<Message>").nth(1).and_then(|r| r.split("</Message>").next()).unwrap_or("");
            let retries = text.split("after ").nth(1).and_then(|r| r.split(',').next()).unwrap_or("");
            (K::Other, format!("{code}: {message} (after {retries})"))
        }
        _ => (K::Other, text),
    };
    io::Error::new(kind, format!("{url}: {msg}"))
}

/// What a listing knows of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub size: u64,
    /// Last modified, in nanoseconds since the epoch.
    pub modified_ns: i128,
    /// The version the store names (a read asks for this one, range after range).
    pub e_tag: Option<String>,
}

/// Every object under a root, by key relative to it; listed once per process.
#[derive(Debug, Default)]
pub struct Listing {
    objects: BTreeMap<String, Meta>,
}

impl Listing {
    /// The listing of `root` (an `s3://` URL), made on first use and kept: paths under it are
    /// then answered from it. A bucket that does not exist or refuses the credentials is an
    /// error naming the URL.
    pub fn of(root: &Path) -> io::Result<Arc<Listing>> {
        let key = PathBuf::from(root.to_string_lossy().trim_end_matches('/'));
        if let Some(l) = listings().lock().unwrap().get(&key) {
            return Ok(l.clone());
        }
        if is_http(&key) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{}: an HTTP root cannot be listed (cases come from [input] metadata)", key.display()),
            ));
        }
        let (store, prefix) = locate(&key)?;
        let url = key.to_string_lossy().into_owned();
        let objects = runtime().block_on(async {
            LISTS.fetch_add(1, Ordering::Relaxed);
            let mut out = BTreeMap::new();
            let mut list = store.list(if prefix.as_ref().is_empty() { None } else { Some(&prefix) });
            while let Some(meta) = list.next().await {
                let meta = meta.map_err(|e| io_error(&url, e))?;
                let full = meta.location.as_ref();
                let rel = full.strip_prefix(prefix.as_ref()).unwrap_or(full).trim_start_matches('/');
                let modified_ns = meta.last_modified.timestamp_nanos_opt().map_or(0, i128::from);
                out.insert(rel.to_string(), Meta { size: meta.size, modified_ns, e_tag: meta.e_tag });
            }
            Ok::<_, io::Error>(out)
        })?;
        let listing = Arc::new(Listing { objects });
        listings().lock().unwrap().insert(key, listing.clone());
        Ok(listing)
    }

    /// The object at `rel` (a key relative to the root), if listed.
    pub fn get(&self, rel: &str) -> Option<&Meta> {
        self.objects.get(rel)
    }

    /// Whether some object lies under `rel/`.
    pub fn is_dir(&self, rel: &str) -> bool {
        if rel.is_empty() {
            return !self.objects.is_empty();
        }
        let dir = format!("{rel}/");
        self.objects.range(dir.clone()..).next().is_some_and(|(k, _)| k.starts_with(&dir))
    }

    /// The names directly under `rel` (objects and "directories"), sorted, each once.
    pub fn children(&self, rel: &str) -> Vec<String> {
        let dir = if rel.is_empty() { String::new() } else { format!("{rel}/") };
        let mut out: Vec<String> = Vec::new();
        for (k, _) in self.objects.range(dir.clone()..) {
            let Some(rest) = k.strip_prefix(&dir) else { break };
            let name = rest.split('/').next().unwrap_or(rest);
            if !name.is_empty() {
                out.push(name.to_string());
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The roots listed so far, and their listings.
fn listings() -> &'static Mutex<HashMap<PathBuf, Arc<Listing>>> {
    static LISTINGS: OnceLock<Mutex<HashMap<PathBuf, Arc<Listing>>>> = OnceLock::new();
    LISTINGS.get_or_init(Default::default)
}

/// The listing that holds `path` and the key of `path` relative to its root: the longest root
/// listed so far that holds it.
fn listed(path: &Path) -> Option<(Arc<Listing>, String)> {
    let listings = listings().lock().unwrap();
    let (root, l) = listings.iter().filter(|(r, _)| path.starts_with(r)).max_by_key(|(r, _)| r.as_os_str().len())?;
    Some((l.clone(), path.strip_prefix(root).ok()?.to_string_lossy().into_owned()))
}

/// Size and time of the object `path`, from its root's listing (or a HEAD request when no
/// listed root holds it).
pub fn stat(path: &Path) -> io::Result<Meta> {
    if let Some((l, rel)) = listed(path) {
        return l
            .get(&rel)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{}: no such object", path.display())));
    }
    // What a HEAD said, kept for the run (an HTTP mirror is not listed: its files are asked
    // for one by one, each once).
    static SEEN: OnceLock<Mutex<HashMap<PathBuf, Meta>>> = OnceLock::new();
    if let Some(m) = SEEN.get_or_init(Default::default).lock().unwrap().get(path) {
        return Ok(m.clone());
    }
    let (store, key) = locate(path)?;
    let url = path.display().to_string();
    HEADS.fetch_add(1, Ordering::Relaxed);
    let meta = runtime().block_on(store.head(&key)).map_err(|e| io_error(&url, e))?;
    let modified_ns = meta.last_modified.timestamp_nanos_opt().map_or(0, i128::from);
    let meta = Meta { size: meta.size, modified_ns, e_tag: meta.e_tag };
    SEEN.get_or_init(Default::default).lock().unwrap().insert(path.to_owned(), meta.clone());
    Ok(meta)
}

/// Whether the object `path` exists (as listed, or by a HEAD request).
pub fn exists(path: &Path) -> bool {
    stat(path).is_ok()
}

/// The whole object (small ones: a metadata CSV).
pub fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    open(path)?.read_to_end(&mut out)?;
    Ok(out)
}

/// The first `len` bytes of the object `path` (fewer if it is shorter), on one range GET.
pub fn read_prefix(path: &Path, len: u64) -> io::Result<bytes::Bytes> {
    let (store, key) = locate(path)?;
    let url = path.display().to_string();
    GETS.fetch_add(1, Ordering::Relaxed);
    let size = stat(path)?.size;
    if size == 0 {
        return Ok(bytes::Bytes::new());
    }
    let bytes = runtime().block_on(store.get_range(&key, 0..len.min(size))).map_err(|e| io_error(&url, e))?;
    BYTES.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(bytes)
}

/// The object `path`, streamed: GETs of [`SEGMENT_BYTES`] ranges one after the other, each
/// body passed on as it arrives through a bounded channel of chunks ([`CHUNKS_IN_FLIGHT`]).
/// Each range is a request of its own (its own retries and timeout, however long the case
/// streams), and asks for the version the listing saw: an object replaced while it is read
/// fails the read instead of mixing two versions.
pub fn open(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    let (store, key) = locate(path)?;
    let meta = stat(path)?;
    let url = path.display().to_string();
    Ok(Box::new(Segments { store, key, url, size: meta.size, e_tag: meta.e_tag, next: 0, body: None }))
}

/// An object read range after range, as a [`Read`].
struct Segments {
    store: Arc<dyn ObjectStore>,
    key: Key,
    url: String,
    size: u64,
    e_tag: Option<String>,
    /// The first byte not yet asked for.
    next: u64,
    /// The range being read.
    body: Option<Body>,
}

/// One range GET's body, chunk by chunk; `Ok(None)` marks its end, so a task that died
/// without one is an error, never a short read.
struct Body {
    rx: tokio::sync::mpsc::Receiver<io::Result<Option<bytes::Bytes>>>,
    chunk: bytes::Bytes,
    done: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Segments {
    /// Starts the GET of the next range.
    fn ask(&mut self) -> Body {
        let range = self.next..(self.next + SEGMENT_BYTES).min(self.size);
        self.next = range.end;
        GETS.fetch_add(1, Ordering::Relaxed);
        let (store, key, url) = (self.store.clone(), self.key.clone(), self.url.clone());
        let opts = object_store::GetOptions {
            range: Some(range.clone().into()),
            if_match: self.e_tag.clone(),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let task = runtime().spawn(async move {
            let mut stream = match store.get_opts(&key, opts).await {
                Ok(r) => r.into_stream(),
                Err(e) => {
                    let _ = tx.send(Err(io_error(&url, e))).await;
                    return;
                }
            };
            let mut got = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| io_error(&url, e));
                if let Ok(c) = &chunk {
                    got += c.len() as u64;
                    BYTES.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
                let failed = chunk.is_err();
                if tx.send(chunk.map(Some)).await.is_err() || failed {
                    return; // the reader is gone, or the error is passed on
                }
            }
            let end = if got == range.end - range.start {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{url}: bytes {}..{} came back as {got} bytes", range.start, range.end),
                ))
            };
            let _ = tx.send(end).await;
        });
        Body { rx, chunk: Default::default(), done: false, task }
    }
}

impl Read for Segments {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.body.as_ref().is_none_or(|b| b.done) {
                if self.next >= self.size {
                    return Ok(0);
                }
                self.body = Some(self.ask());
            }
            let body = self.body.as_mut().expect("just set");
            while body.chunk.is_empty() && !body.done {
                match body.rx.blocking_recv() {
                    Some(Ok(Some(c))) => body.chunk = c,
                    Some(Ok(None)) => body.done = true,
                    Some(Err(e)) => return Err(e),
                    None => return Err(io::Error::other(format!("{}: the request ended without its end", self.url))),
                }
            }
            if !body.chunk.is_empty() {
                let n = buf.len().min(body.chunk.len());
                buf[..n].copy_from_slice(&body.chunk[..n]);
                let _ = body.chunk.split_to(n);
                return Ok(n);
            }
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // A reader dropped early (a failed case) stops its request.
        self.task.abort();
    }
}

/// `path.is_file()`, for a local path or an object (from its root's listing, else a HEAD).
pub fn is_file(path: &Path) -> bool {
    if !is_object(path) {
        return path.is_file();
    }
    exists(path)
}

/// `path.is_dir()`, for a local path or a "directory" of a listed bucket root.
pub fn is_dir(path: &Path) -> bool {
    if !is_object(path) {
        return path.is_dir();
    }
    listed(path).is_some_and(|(l, rel)| l.is_dir(&rel))
}

/// The names in directory `path` (local, or of a listed bucket root), sorted; hidden ones
/// (starting with `.`) left out. A directory that does not exist has none.
pub fn read_dir(path: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = if is_object(path) {
        listed(path).map(|(l, rel)| l.children(&rel)).unwrap_or_default()
    } else {
        match std::fs::read_dir(path) {
            Ok(entries) => entries.filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string)).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        }
    };
    names.retain(|n| !n.starts_with('.'));
    names.sort();
    Ok(names)
}

/// A local file or an object, read from its start.
pub fn open_read(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    if is_object(path) { open(path) } else { Ok(Box::new(std::fs::File::open(path)?)) }
}

/// Size and modification time (ns since 1970) of a local file or an object.
pub fn size_and_time(path: &Path) -> io::Result<(u64, u64)> {
    if is_object(path) {
        let m = stat(path)?;
        return Ok((m.size, m.modified_ns.max(0) as u64));
    }
    let m = std::fs::metadata(path)?;
    let ns = m.modified()?.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    Ok((m.len(), ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(keys: &[&str]) -> Listing {
        let meta = Meta { size: 1, modified_ns: 0, e_tag: None };
        Listing { objects: keys.iter().map(|k| (k.to_string(), meta.clone())).collect() }
    }

    #[test]
    fn a_listing_answers_as_a_directory_tree() {
        let l = listing(&["a/ct.nii.gz", "a/p/x.nii.gz", "a/p/y.nii.gz", "a-b/ct.nii", "meta.csv", "z/"]);
        assert_eq!(l.children(""), ["a", "a-b", "meta.csv", "z"]);
        assert_eq!(l.children("a"), ["ct.nii.gz", "p"]);
        assert_eq!(l.children("a/p"), ["x.nii.gz", "y.nii.gz"]);
        assert!(l.children("a/ct.nii.gz").is_empty());
        assert!(l.is_dir("") && l.is_dir("a") && l.is_dir("a/p") && l.is_dir("a-b"));
        assert!(!l.is_dir("a/ct.nii.gz") && !l.is_dir("b") && !l.is_dir("a/"));
        assert!(l.get("a/p/x.nii.gz").is_some() && l.get("a/p").is_none());
    }

    #[test]
    fn paths_name_objects_by_url() {
        assert!(is_object(Path::new("s3://b/p")) && !is_object(Path::new("/s3/b")));
        assert_eq!(local("file:///data/corpus"), PathBuf::from("/data/corpus"));
        assert_eq!(local("corpus"), PathBuf::from("corpus"));
        let root = Path::new("s3://b/p");
        let file = root.join("case/ct.nii.gz");
        assert_eq!(file.to_str(), Some("s3://b/p/case/ct.nii.gz"));
        assert_eq!(file.strip_prefix(root).unwrap(), Path::new("case/ct.nii.gz"));
    }
}
