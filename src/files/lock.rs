//! Who may write an output directory: one single-node run (or merge, or a start-over), or the
//! shards of one sharded run, each shard once.
//!
//! Two mechanisms, because cluster filesystems break the first:
//! - an **OS lock** (`flock`) on `<out>/.slabflow.lock`, exclusive or shared: instant, and
//!   released by the kernel when the process dies. The file is opened read-write, so NFSv4
//!   (where Linux maps `flock` to POSIX locks, which need a readable descriptor for a shared
//!   lock) takes it. Where it fails (Lustre mounted `noflock`: ENOSYS; NFS `nolock`: ENOLCK) it
//!   is skipped, and where it is only node-local (Lustre `localflock`, NFS
//!   `local_lock=flock`) it cannot see other nodes: hence
//! - a **lease**: a file in `<out>/.slabflow.leases/` created atomically with `link(2)` (the
//!   lock-file method that holds on NFS), naming the holder (host, boot id, pid and its start
//!   time) and renewed by a heartbeat thread that touches it every [`lease_secs`]/8. Another
//!   run treats it as live unless its process is gone (same host: checked at once) or it was
//!   not renewed for [`lease_secs`] (another host: after expiry), and then takes it over,
//!   saying so. `run.lease` is the exclusive hold, `shard-K-of-N.lease` a shard's; an exclusive
//!   holder checks no live shard lease exists and a shard that no live `run.lease` does (each
//!   creates its own first, so of two racing runs at least one sees the other).
//!
//! Invariants: a holder whose lease was taken over (it was frozen or cut off for longer than
//! the expiry) publishes and removes nothing more: before each case and right before every
//! record, slab checkpoint, export rename and table, [`verify_held`] checks the lease, and on
//! loss the process exits at once (status 75), as the heartbeat does — like a killed run,
//! which the journal survives, and with none of a failed case's clean-up (the data is the new
//! holder's). The engine checks before each slab too. What remains: the chunk writes of the
//! slab in flight when the process froze, completing after it wakes, into a group the new
//! holder rewrites from scratch if it has not finished that case yet; closing that window
//! entirely needs fenced writes (conditional PUTs on object storage). The process table judges a lease only when its holder shares
//! ours (host, boot id, PID namespace); any other holder, by the lease's age against the
//! longer of its expiry and ours.
//!
//! What holds where (README "Filesystems"): local disks — both; NFS — the lease, and the OS lock
//! with `local_lock=none` (the default); Lustre — the lease, and the OS lock with `flock`;
//! object storage — the lease alone: an object created with a conditional PUT
//! (`If-None-Match: *`), renewed by PUTting it again on the condition that it is still the
//! version read (`If-Match`), its age the store's last-modified time; the OS lock then only
//! guards the process's scratch folder.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Shard;
use super::durable::{create_dir_durable, sync_parent};
use super::mirror;

/// What a run holds on its output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hold {
    /// A single-node run, a merge or a start-over: nobody else.
    Exclusive,
    /// One shard of a sharded run: beside the other shards.
    Shard(Shard),
}

impl Hold {
    fn lease_name(self) -> String {
        match self {
            Hold::Exclusive => "run.lease".into(),
            Hold::Shard(s) => format!("shard-{}.lease", s.dir_name()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("output directory {dir} is in use by another slabflow run ({holder}); wait for it or use another --output")]
    Busy { dir: PathBuf, holder: String },
    #[error("locking {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Seconds without renewal after which another host's lease counts as dead: 120, or
/// `SLABFLOW_LEASE_SECS`. The heartbeat renews every eighth of it.
pub fn lease_secs() -> u64 {
    std::env::var("SLABFLOW_LEASE_SECS").ok().and_then(|v| v.parse().ok()).filter(|&s| s > 0).unwrap_or(120)
}

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Owner {
    /// Unique to this holding: what the heartbeat checks is still in the file.
    token: String,
    host: String,
    boot_id: String,
    /// The PID namespace (`/proc/self/ns/pid`): containers on one host share the boot id but
    /// not the process table.
    #[serde(default)]
    pid_ns: String,
    pid: u32,
    /// The process's start time (clock ticks since boot, `/proc/<pid>/stat`): a reused pid
    /// is not mistaken for the holder.
    pid_start: u64,
    what: String,
    started_unix: u64,
    /// The holder's expiry (seconds): a run with a shorter one must not judge it by its own.
    #[serde(default)]
    expiry: u64,
}

impl Owner {
    fn me(what: String) -> Owner {
        let pid = std::process::id();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Owner {
            token: format!("{}-{pid}-{}", hostname(), now.as_nanos()),
            host: hostname(),
            boot_id: boot_id(),
            pid_ns: pid_ns(),
            pid,
            pid_start: pid_start(pid).unwrap_or(0),
            what,
            started_unix: now.as_secs(),
            expiry: lease_secs(),
        }
    }

    fn describe(&self) -> String {
        format!("{}, pid {} on {}", self.what, self.pid, self.host)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

fn pid_ns() -> String {
    std::fs::read_link("/proc/self/ns/pid").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat` (after the parenthesised command name, which may hold
/// spaces).
fn pid_start(pid: u32) -> Option<u64> {
    match pid_state(pid) {
        PidState::Running(start) => Some(start),
        _ => None,
    }
}

enum PidState {
    /// Running, since this many clock ticks after boot.
    Running(u64),
    Gone,
    /// Cannot be told (`hidepid`, another user's process): judge by the lease's age.
    Unknown,
}

fn pid_state(pid: u32) -> PidState {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(19)?.parse().ok())
            .map_or(PidState::Unknown, PidState::Running),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PidState::Gone,
        Err(_) => PidState::Unknown,
    }
}

/// Whether a lease's holder may still be running.
enum Liveness {
    Alive(String),
    Dead(String),
}

fn judge(owner: Option<&Owner>, modified: SystemTime, expiry: u64) -> Liveness {
    let age = SystemTime::now().duration_since(modified).unwrap_or_default().as_secs();
    if let Some(o) = owner {
        // The process table decides only for a holder in this very process table: same host,
        // same boot, same PID namespace, and its /proc entry readable to us (not `hidepid`).
        let here = o.host == hostname()
            && !o.boot_id.is_empty()
            && o.boot_id == boot_id()
            && !o.pid_ns.is_empty()
            && o.pid_ns == pid_ns();
        let proc_visible = Path::new("/proc/self/stat").exists() && Path::new("/proc/1").exists();
        if here && proc_visible {
            match pid_state(o.pid) {
                PidState::Running(start) if start == o.pid_start || o.pid_start == 0 => {
                    return Liveness::Alive(format!("{}, lease renewed {age} s ago", o.describe()));
                }
                PidState::Running(_) | PidState::Gone => {
                    return Liveness::Dead(format!("{}: that process has ended", o.describe()));
                }
                PidState::Unknown => {}
            }
        }
    }
    // Anyone else: by the lease's age, against the longer of its holder's expiry and ours.
    let expiry = owner.map_or(expiry, |o| o.expiry.max(expiry));
    let who = owner.map_or_else(|| "an unreadable lease".to_string(), Owner::describe);
    if age > expiry {
        Liveness::Dead(format!("{who}: not renewed for {age} s (leases expire after {expiry} s)"))
    } else {
        Liveness::Alive(format!(
            "{who}, lease renewed {age} s ago; if that run is dead, its lease expires in {} s",
            expiry - age
        ))
    }
}

fn read_lease(path: &Path) -> std::io::Result<(Option<Owner>, SystemTime)> {
    if let Some((m, rel)) = mirror::of(path) {
        let (bytes, modified, _) = m.get_versioned(&rel)?;
        return Ok((serde_json::from_slice(&bytes).ok(), modified));
    }
    let mut f = File::open(path)?;
    let modified = f.metadata()?.modified()?;
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok((serde_json::from_str(&s).ok(), modified))
}

/// Creates `path` holding `owner`, atomically: written under a unique name, then hard-linked
/// to `path` (fails if it exists, on NFS too). `Ok(false)`: someone holds it.
fn try_create(path: &Path, owner: &Owner) -> std::io::Result<bool> {
    if let Some((m, rel)) = mirror::of(path) {
        // In a bucket: a conditional PUT (`If-None-Match: *`). A retried PUT whose first try
        // landed finds its own lease there.
        if m.put_new(&rel, serde_json::to_vec_pretty(owner).expect("serialisable").into())? {
            return Ok(true);
        }
        return Ok(matches!(read_lease(path), Ok((Some(o), _)) if o.token == owner.token));
    }
    let tmp = path.with_file_name(format!(".{}.new-{}", owner.token, std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(owner).expect("serialisable"))?;
    f.sync_all()?;
    drop(f);
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the dead lease at `path`, if it is still the one judged dead (`token`): renamed
/// aside first, so of two runs taking over one lease, only one removes it, and a live lease
/// created meanwhile is put back.
fn remove_dead(path: &Path, token: Option<&str>, me: &str) -> std::io::Result<()> {
    let aside = path.with_file_name(format!(".{}.dead-{me}", path.file_name().unwrap().to_string_lossy()));
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let (owner, _) = read_lease(&aside).unwrap_or((None, UNIX_EPOCH));
    if owner.as_ref().map(|o| o.token.as_str()) != token {
        // A live one replaced it between our look and the rename: give it back.
        let _ = std::fs::hard_link(&aside, path);
    }
    std::fs::remove_file(&aside)
}

/// In a bucket: replaces the dead lease at `path` (still holding `token`) with `me`'s, on the
/// condition that it is still the version judged dead (`If-Match`): of two runs taking it
/// over, one wins. `Ok(false)`: someone else changed it first.
fn take_over(path: &Path, token: Option<&str>, me: &Owner) -> std::io::Result<bool> {
    let Some((m, rel)) = mirror::of(path) else { return Ok(false) };
    let (bytes, _, e_tag) = match m.get_versioned(&rel) {
        Ok(v) => v,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if serde_json::from_slice::<Owner>(&bytes).ok().map(|o| o.token).as_deref() != token || e_tag.is_none() {
        return Ok(false);
    }
    m.put_if(&rel, serde_json::to_vec_pretty(me).expect("serialisable").into(), e_tag)
}

/// The leases this process holds (path, token): what [`verify_held`] checks.
static HELD: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// Makes sure this process still holds every lease it took, and exits at once (status 75)
/// if not: called right before a record, a slab checkpoint, an export or a table is
/// published, and before each case, so a run taken over between two heartbeats publishes
/// nothing more — and cleans nothing up either (the data it would remove is the new
/// holder's now). A transient read error counts as held (the heartbeat decides).
pub fn verify_held() {
    let held = HELD.lock().unwrap().clone();
    for (path, token) in &held {
        // A lease in a bucket costs a GET to check: once a second at most (a slab takes
        // tens of milliseconds; the heartbeat checks every eighth of the expiry anyway).
        if mirror::of(path).is_some() {
            static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
            let mut last = LAST.lock().unwrap();
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                continue;
            }
            *last = Some(std::time::Instant::now());
        }
        if still_ours(path, token) == Some(false) {
            lost(path);
        }
    }
}

/// The end of a run whose lease was taken over.
fn lost(path: &Path) -> ! {
    tracing::error!(
        lease = %path.display(),
        "This run's lease was taken over by another run (this process was stopped or cut off for longer than the lease expiry); exiting at once."
    );
    std::process::exit(75);
}

/// The heartbeat's stop signal.
type Stop = Arc<(Mutex<bool>, Condvar)>;

/// A held lease: renewed until dropped, then removed.
struct Lease {
    path: PathBuf,
    token: String,
    stop: Stop,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    fn start(path: PathBuf, owner: &Owner) -> Lease {
        let stop: Stop = Arc::new((Mutex::new(false), Condvar::new()));
        let every = Duration::from_millis(lease_secs() * 1000 / 8).max(Duration::from_millis(100));
        let (p, token, s) = (path.clone(), owner.token.clone(), stop.clone());
        let heartbeat = std::thread::Builder::new()
            .name("slabflow-lease".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut stopped = lock.lock().unwrap();
                loop {
                    // Checked before each wait: a stop signalled before it is not missed.
                    let deadline = std::time::Instant::now() + every;
                    while !*stopped {
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        stopped = cv.wait_timeout(stopped, left).unwrap().0;
                    }
                    if *stopped {
                        return;
                    }
                    renew(&p, &token);
                }
            })
            .expect("spawning the lease heartbeat");
        HELD.lock().unwrap().push((path.clone(), owner.token.clone()));
        Lease { path, token: owner.token.clone(), stop, heartbeat: Some(heartbeat) }
    }
}

/// One heartbeat: the lease must still be ours; then its modification time is set to now.
/// Whether the lease at `path` is still the one with `token`: `None` when that cannot be told
/// (a transient error: NFS ESTALE or EIO). Missing or another holder's is looked at twice,
/// 200 ms apart: a taker that found a live lease puts it back at once (`remove_dead`).
fn still_ours(path: &Path, token: &str) -> Option<bool> {
    let look = || match read_lease(path) {
        Ok((Some(o), _)) => Some(o.token == token),
        Ok((None, _)) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    };
    match look() {
        Some(false) => {
            std::thread::sleep(Duration::from_millis(200));
            look()
        }
        r => r,
    }
}

fn renew(path: &Path, token: &str) {
    let Some(ours) = still_ours(path, token) else { return }; // look again next beat
    if !ours {
        // Frozen or cut off past the expiry, and another run took over: writing on would mix
        // two runs' data. Exit like a killed run; the journal survives that.
        lost(path);
    }
    if let Some((m, rel)) = mirror::of(path) {
        // In a bucket: the same document PUT again if it is still the version read
        // (`If-Match`), which sets its time; a failed condition is looked at next beat.
        if let Ok((bytes, _, e_tag)) = m.get_versioned(&rel)
            && serde_json::from_slice::<Owner>(&bytes).is_ok_and(|o| o.token == token)
            && !matches!(m.put_if(&rel, bytes, e_tag), Ok(true))
        {
            tracing::warn!(lease = %mirror::display(path), "The lease could not be renewed (tried again at the next beat).");
        }
        return;
    }
    if let Ok(f) = File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        HELD.lock().unwrap().retain(|(_, t)| *t != self.token);
        let ours = read_lease(&self.path).ok().and_then(|(o, _)| o).is_some_and(|o| o.token == self.token);
        if ours {
            let _ = std::fs::remove_file(&self.path);
            let _ = mirror::remove_file(&self.path);
        }
    }
}

/// A hold on an output directory; released when dropped (or when the process dies).
pub struct OutputLock {
    pub hold: Hold,
    _lease: Lease,
    _os_lock: Option<File>,
}

impl std::fmt::Debug for OutputLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutputLock({:?})", self.hold)
    }
}

/// The folder of the leases of `out`.
pub fn leases_dir(out: &Path) -> PathBuf {
    out.join(".slabflow.leases")
}

/// Takes `hold` on `out` (an existing directory), or says at once who has it.
pub fn lock(out: &Path, hold: Hold) -> Result<OutputLock, LockError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| LockError::Io { path, source }
    };
    let busy = |holder: String| LockError::Busy { dir: out.to_owned(), holder };
    let os_lock = os_lock(out, hold, &busy)?;

    let dir = leases_dir(out);
    create_dir_durable(&dir).map_err(io(&dir))?;
    if let Some((m, _)) = mirror::of(out) {
        m.check_conditional_puts().map_err(io(out))?;
    }
    let what = match hold {
        Hold::Exclusive => "a single-node run".to_string(),
        Hold::Shard(s) => format!("shard {s}"),
    };
    let me = Owner::me(what);
    let expiry = lease_secs();
    let path = dir.join(hold.lease_name());
    // Ours, or taken over from a dead holder (at most twice: a racing taker may win).
    let mut created = false;
    for _ in 0..3 {
        if try_create(&path, &me).map_err(io(&path))? {
            created = true;
            break;
        }
        let Ok((owner, modified)) = read_lease(&path) else { continue }; // just removed
        match judge(owner.as_ref(), modified, expiry) {
            Liveness::Alive(who) => return Err(busy(who)),
            Liveness::Dead(why) => {
                // A killed run on this host is routine (the journal is made for it); a lease
                // expired on another host is worth a look.
                if why.ends_with("has ended") {
                    tracing::info!(lease = %path.display(), "Taking over the lease of a run that is gone ({why}).");
                } else {
                    tracing::warn!(lease = %path.display(), "Taking over the lease of a run that is gone ({why}).");
                }
                let token = owner.as_ref().map(|o| o.token.as_str());
                if mirror::of(&path).is_some() {
                    if take_over(&path, token, &me).map_err(io(&path))? {
                        created = true;
                        break;
                    }
                    continue;
                }
                remove_dead(&path, token, &me.token).map_err(io(&path))?;
            }
        }
    }
    if !created {
        return Err(busy(format!("lease {} keeps being taken", path.display())));
    }
    let lease = Lease::start(path, &me);

    // The holds that exclude ours, created before we looked or after: we see theirs, or they
    // see ours.
    let others: Vec<PathBuf> = match hold {
        Hold::Exclusive => match mirror::children(&dir).map_err(io(&dir))? {
            Some(names) => names.into_iter().map(|n| dir.join(n)).collect(),
            None => std::fs::read_dir(&dir).map_err(io(&dir))?.flatten().map(|e| e.path()).collect::<Vec<_>>(),
        }
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("shard-")))
        .filter(|p| p.extension().is_some_and(|x| x == "lease"))
        .collect(),
        Hold::Shard(_) => vec![dir.join(Hold::Exclusive.lease_name())],
    };
    for other in others {
        let Ok((owner, modified)) = read_lease(&other) else { continue };
        match judge(owner.as_ref(), modified, expiry) {
            Liveness::Alive(who) => return Err(busy(who)), // drops our lease
            // In a bucket a dead lease is left for a run of its own kind to take over in one
            // conditional PUT ([`take_over`]); on a disk it goes.
            Liveness::Dead(why) if mirror::of(&other).is_some() => {
                tracing::info!(lease = %mirror::display(&other), "A lease of a run that is gone ({why}).");
            }
            Liveness::Dead(why) => {
                tracing::warn!(lease = %other.display(), "Removing the lease of a run that is gone ({why}).");
                remove_dead(&other, owner.as_ref().map(|o| o.token.as_str()), &me.token).map_err(io(&other))?;
            }
        }
    }
    // On a bucket output, the journal as the bucket has it now that we hold the output.
    if let Some((m, _)) = mirror::of(out) {
        m.pull().map_err(io(out))?;
    }
    Ok(OutputLock { hold, _lease: lease, _os_lock: os_lock })
}

/// The OS lock, where the filesystem gives one (`None` where it does not: the lease alone).
fn os_lock(out: &Path, hold: Hold, busy: &dyn Fn(String) -> LockError) -> Result<Option<File>, LockError> {
    let path = out.join(".slabflow.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|source| LockError::Io { path: path.clone(), source })?;
    let r = match hold {
        Hold::Exclusive => file.try_lock(),
        Hold::Shard(_) => file.try_lock_shared(),
    };
    match r {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(busy(format!("OS lock {} held on this host", path.display()))),
        Err(std::fs::TryLockError::Error(e))
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS | libc::ENOLCK | libc::EOPNOTSUPP | libc::EBADF | libc::EINVAL)
            ) =>
        {
            tracing::info!(lock = %path.display(), error = %e, "No OS file lock on this filesystem; the lease alone guards the output.");
            Ok(None)
        }
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_and_shard_holds_exclude_each_other_and_release_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        let s = |i| Hold::Shard(Shard { index: i, count: 2 });
        let a = lock(out, s(0)).unwrap();
        let b = lock(out, s(1)).unwrap();
        assert!(matches!(lock(out, s(1)), Err(LockError::Busy { .. })), "one shard once");
        assert!(matches!(lock(out, Hold::Exclusive), Err(LockError::Busy { .. })));
        drop((a, b));
        let x = lock(out, Hold::Exclusive).unwrap();
        assert!(matches!(lock(out, s(0)), Err(LockError::Busy { .. })));
        drop(x);
        assert!(std::fs::read_dir(leases_dir(out)).unwrap().next().is_none(), "leases removed on release");
    }

    fn foreign(out: &Path, name: &str, host: &str, age: u64) -> PathBuf {
        let dir = leases_dir(out);
        create_dir_durable(&dir).unwrap();
        let o = Owner {
            token: "x".into(),
            host: host.into(),
            boot_id: "other-boot".into(),
            pid_ns: String::new(),
            pid: 1,
            pid_start: 1,
            what: "shard 0/2".into(),
            started_unix: 0,
            expiry: 0,
        };
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec(&o).unwrap()).unwrap();
        let f = File::options().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age)).unwrap();
        path
    }

    #[test]
    fn another_hosts_lease_holds_until_it_expires() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        foreign(out, "shard-0-of-2.lease", "node07", 5);
        let e = lock(out, Hold::Exclusive).unwrap_err().to_string();
        assert!(e.contains("shard 0/2, pid 1 on node07") && e.contains("expires in"), "{e}");
        foreign(out, "shard-0-of-2.lease", "node07", lease_secs() + 5);
        drop(lock(out, Hold::Exclusive).expect("an expired lease is taken over"));
        assert!(!leases_dir(out).join("shard-0-of-2.lease").exists());
    }

    #[test]
    fn a_dead_process_on_this_host_is_seen_at_once() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        let path = foreign(out, "run.lease", &hostname(), 0);
        let mut o: Owner = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        o.boot_id = boot_id();
        o.pid_ns = pid_ns();
        o.pid = u32::MAX - 1; // no such process
        std::fs::write(&path, serde_json::to_vec(&o).unwrap()).unwrap();
        drop(lock(out, Hold::Exclusive).expect("the holder is gone"));
    }
}
