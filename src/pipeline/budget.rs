//! The memory budget: every case reserves the bytes its slabs will need before allocating
//! them, and waits while other cases hold the rest.
//!
//! Invariants: the sum of reservations never exceeds the limit minus [`BASE_BYTES`]; a case
//! needing more than that alone is refused with the size it needs. Nor does what is *held*:
//! the reservations plus the memory ended cases freed that the allocator may still keep
//! resident (`kept`). Before a reservation would pass the limit with it, the allocator is made
//! to return freed memory to the operating system ([`set_memory_release`]). So a run's
//! resident memory stays under the limit as far as the model holds (a miss is corrected at
//! the next reservation, below), without paying for a release (and the page faults after it)
//! at every case.
//!
//! `kept` is a model, per worker thread (the thread that reserved): a case's threads allocate
//! from its worker thread's allocator arena ([`crate::pipeline::flow::set_thread_arena`]), so
//! the worker's next case is taken to reuse what the worker's earlier cases freed, up to its
//! own size, and only the rest of it adds to what is held. Counted globally instead, every
//! ended case's pages were added to the next case's, the sum passed the limit at nearly every
//! case of two full-size cases at a time, and each case faulted its buffers in anew (148,000
//! page faults per case; benches/README.md, "The inflate floor"). Reuse is not perfect: the
//! allocator's free extents fragment, a larger case cannot be carved from a smaller one's, and
//! the compression pool's threads allocate from their own arenas. So the model is checked
//! against the process's real anonymous resident memory (`RssAnon`: mapped input files do not
//! count, a release cannot return them) at each reservation: when it is over what is held
//! plus [`BASE_BYTES`], the reservation releases first. A miss is thus corrected at the next
//! reservation, not before: [`MemoryWatch`] reports one that raised the peak.
//!
//! What a reservation counts ([`crate::pipeline::case::case_memory`], from the headers alone):
//! the slab sets in flight, the gzip readers' windows, the encoding scratch of each pool
//! thread, what each stage holds (its windows, maps and pending chunks), and a tenth more for
//! the allocator. [`BASE_BYTES`] covers the rest of the process. Not counted, because it is
//! not the process's memory: the kernel's page cache of the files read and written (a memory
//! cgroup charges it, but reclaims it before it kills; `slabflow slurm` asks for a quarter
//! more than the limit for it). The limit is checked, not only planned: after each case
//! [`MemoryWatch`] compares the process's peak resident memory with what was held meanwhile,
//! and the run warns when the peak went over.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::ThreadId;

/// Memory the process uses whatever the data: code, thread stacks, allocator slack, zarrs'
/// and flate2's state.
pub const BASE_BYTES: u64 = 48 << 20;

pub struct MemoryBudget {
    available: u64,
    /// [`set_memory_release`]'s function, if one was registered when the budget was made.
    release: Option<fn()>,
    /// The process's resident memory now ([`resident`]; replaced in tests).
    resident: fn() -> Option<u64>,
    used: Mutex<Used>,
    freed: Condvar,
}

#[derive(Default)]
struct Used {
    /// Reserved by running cases.
    now: u64,
    /// Per worker thread, reserved by its cases that ended since the allocator last released
    /// freed memory, less what its running case reuses: an upper bound of what the allocator
    /// may still keep resident for them.
    kept: HashMap<ThreadId, u64>,
    /// The most of `now + Σ kept` since [`MemoryBudget::take_high_water`] last ran.
    high_water: u64,
}

impl Used {
    fn held(&self) -> u64 {
        self.now + self.kept.values().sum::<u64>()
    }
}

pub struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
    worker: ThreadId,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> MemoryBudget {
        Self::with_release(limit, RELEASE.get().copied(), resident)
    }

    fn with_release(limit: u64, release: Option<fn()>, resident: fn() -> Option<u64>) -> MemoryBudget {
        MemoryBudget {
            available: limit.saturating_sub(BASE_BYTES),
            release,
            resident,
            used: Mutex::new(Used::default()),
            freed: Condvar::new(),
        }
    }

    /// Bytes cases may reserve in total.
    pub fn available(&self) -> u64 {
        self.available
    }

    /// Blocks until `bytes` fit, then reserves them for a case the calling thread runs (its
    /// worker thread); `Err(available)` if they never can.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, u64> {
        if bytes > self.available {
            return Err(self.available);
        }
        let worker = std::thread::current().id();
        let mut used = self.used.lock().unwrap();
        while used.now + bytes > self.available {
            used = self.freed.wait(used).unwrap();
        }
        // (Without a release, nothing is kept.)
        if let Some(release) = self.release {
            // The pages this worker's ended cases freed serve this case first.
            let reused = used.kept.get(&worker).map_or(0, |&k| k.min(bytes));
            let would_pass = used.held() + bytes - reused > self.available;
            // Only worth reading when there is something to release and the count alone
            // would not release.
            let over_the_count = !would_pass
                && used.kept.values().any(|&k| k > 0)
                && (self.resident)().is_some_and(|r| {
                    let over = r > used.held() + BASE_BYTES;
                    if over {
                        tracing::debug!(
                            resident = r,
                            held = used.held(),
                            "the allocator keeps more than counted: releasing"
                        );
                    }
                    over
                });
            if would_pass || over_the_count {
                release();
                used.kept.clear();
            } else if reused > 0 {
                *used.kept.get_mut(&worker).unwrap() -= reused;
            }
        }
        used.now += bytes;
        used.high_water = used.high_water.max(used.held());
        Ok(Reservation { budget: self, bytes, worker })
    }

    /// The most held at once (reserved, or freed by ended cases and counted as kept) since
    /// the last call; starts the next period at what is held now.
    pub fn take_high_water(&self) -> u64 {
        let mut used = self.used.lock().unwrap();
        let now = used.held();
        std::mem::replace(&mut used.high_water, now)
    }
}

/// How freed memory goes back to the operating system, when the allocator keeps it otherwise.
static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers how to hand memory the process freed back to the operating system (the binary's
/// allocator: `slabflow` purges jemalloc's dirty pages, which it otherwise keeps for
/// seconds). Without one, freed memory is assumed returned at once.
pub fn set_memory_release(release: fn()) {
    let _ = RELEASE.set(release);
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        // Everything the case allocated was dropped before its reservation (declared first).
        let mut used = self.budget.used.lock().unwrap();
        used.now -= self.bytes;
        if self.budget.release.is_some() {
            *used.kept.entry(self.worker).or_default() += self.bytes;
        }
        drop(used);
        self.budget.freed.notify_all();
    }
}

/// Checks the promise of the budget against the process's real peak: when the peak resident
/// memory (`VmHWM`) rose between two checks, it must stay under [`BASE_BYTES`] plus the most
/// held at once meanwhile (reserved, or counted as kept). (A peak that did not rise was checked before.
/// `VmHWM` is never reset: `/usr/bin/time`, SLURM and the benches read the same figure.)
/// Linux only; elsewhere it measures nothing.
pub struct MemoryWatch<'a> {
    budget: &'a MemoryBudget,
    /// The peak at the last check.
    last: Mutex<u64>,
}

/// A peak over what was reserved.
#[derive(Debug, Clone, PartialEq)]
pub struct Overshoot {
    pub peak: u64,
    pub reserved: u64,
}

impl<'a> MemoryWatch<'a> {
    pub fn new(budget: &'a MemoryBudget) -> MemoryWatch<'a> {
        MemoryWatch { budget, last: Mutex::new(0) }
    }

    /// Compares a peak reached since the last check with the reservations over the same
    /// period, then starts a new period.
    pub fn check(&self) -> Option<Overshoot> {
        let mut last = self.last.lock().unwrap();
        let peak = peak_rss()?;
        judge(&mut last, peak, self.budget.take_high_water() + BASE_BYTES)
    }
}

/// An overshoot if `peak` rose above the `last` one checked and above `reserved`.
fn judge(last: &mut u64, peak: u64, reserved: u64) -> Option<Overshoot> {
    let rose = peak > std::mem::replace(last, peak);
    (rose && peak > reserved).then_some(Overshoot { peak, reserved })
}

/// Peak resident memory of this process (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// Anonymous resident memory of this process now (Linux `RssAnon`: the heap and stacks, not
/// the pages of mapped files).
pub fn resident() -> Option<u64> {
    proc_status_bytes("RssAnon:")
}

/// A kB figure of `/proc/self/status`, in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_wait_and_refuse() {
        let b = MemoryBudget::new(BASE_BYTES + 100);
        assert_eq!(b.reserve(101).err(), Some(100));
        let r = b.reserve(60).unwrap();
        std::thread::scope(|s| {
            let h = s.spawn(|| b.reserve(60).map(|_| ()).is_ok());
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(r);
            assert!(h.join().unwrap());
        });
    }

    #[test]
    fn high_water_is_the_most_reserved_at_once() {
        let b = MemoryBudget::new(BASE_BYTES + 100);
        let r1 = b.reserve(30).unwrap();
        let r2 = b.reserve(50).unwrap();
        drop(r1);
        assert_eq!(b.take_high_water(), 80);
        // The next period starts at what is still reserved.
        assert_eq!(b.take_high_water(), 50);
        drop(r2);
        assert_eq!(b.take_high_water(), 50);
        assert_eq!(b.take_high_water(), 0);
    }

    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    static RELEASES: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn freed_memory_is_released_only_before_it_could_pass_the_limit() {
        let count = || RELEASES.load(SeqCst);
        let b = MemoryBudget::with_release(
            BASE_BYTES + 100,
            Some(|| {
                RELEASES.fetch_add(1, SeqCst);
            }),
            || None,
        );
        // A case run by another worker thread, whose pages this one cannot reuse.
        let elsewhere = |bytes| std::thread::scope(|s| s.spawn(|| drop(b.reserve(bytes).unwrap())).join().unwrap());
        elsewhere(40);
        // 40 freed, maybe still resident: 40 + 50 fits, no release.
        let r = b.reserve(50).unwrap();
        assert_eq!((count(), b.take_high_water()), (0, 90));
        drop(r);
        // A smaller case of this worker reuses 30 of the 50 it freed (counted globally,
        // 40 + 50 + 30 would have passed 100): 40 + 20 + 30 held, no release.
        let r = b.reserve(30).unwrap();
        assert_eq!((count(), b.take_high_water(), b.take_high_water()), (0, 90, 90));
        drop(r);
        // A larger one reuses all 50 it kept, and adds 10: 40 + 60.
        let r = b.reserve(60).unwrap();
        assert_eq!((count(), b.take_high_water(), b.take_high_water()), (0, 100, 100));
        drop(r);
        // 40 kept elsewhere + 60 here, and 10 more on a third worker would pass 100:
        // released first, and only what ended since is held.
        elsewhere(10);
        assert_eq!((count(), b.take_high_water(), b.take_high_water()), (1, 100, 10));
    }

    static OVER_RELEASES: AtomicUsize = AtomicUsize::new(0);
    static OVER_READS: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn memory_the_allocator_keeps_beyond_the_count_is_released() {
        // The process holds more than anything counted (the allocator could not reuse what a
        // case freed).
        let b = MemoryBudget::with_release(
            BASE_BYTES + 100,
            Some(|| {
                OVER_RELEASES.fetch_add(1, SeqCst);
            }),
            || {
                OVER_READS.fetch_add(1, SeqCst);
                Some(BASE_BYTES + 1000)
            },
        );
        // Nothing freed yet: nothing to release, nothing read.
        drop(b.reserve(30).unwrap());
        assert_eq!((OVER_RELEASES.load(SeqCst), OVER_READS.load(SeqCst)), (0, 0));
        // A case freed 30 that the count says this one reuses, but the process holds more.
        let _r = b.reserve(30).unwrap();
        assert_eq!((OVER_RELEASES.load(SeqCst), OVER_READS.load(SeqCst)), (1, 1));
    }

    static UNDER_RELEASES: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn memory_the_allocator_keeps_within_the_count_is_not_released() {
        // Resident: the base and 10 of the 30 the ended case had reserved.
        let b = MemoryBudget::with_release(
            BASE_BYTES + 100,
            Some(|| {
                UNDER_RELEASES.fetch_add(1, SeqCst);
            }),
            || Some(BASE_BYTES + 10),
        );
        drop(b.reserve(30).unwrap());
        let _r = b.reserve(30).unwrap();
        assert_eq!(UNDER_RELEASES.load(SeqCst), 0);
    }

    #[test]
    fn without_a_release_the_resident_memory_is_never_read() {
        let b = MemoryBudget::with_release(BASE_BYTES + 100, None, || unreachable!("read without a release"));
        drop(b.reserve(60).unwrap());
        // Freed memory is taken as returned at once: 60 + 60 would pass 100 otherwise.
        let _r = b.reserve(60).unwrap();
        drop(b.reserve(40).unwrap());
    }

    #[test]
    fn watch_sees_a_peak_over_the_reservations() {
        if peak_rss().is_none() {
            return; // not Linux
        }
        let b = MemoryBudget::new(u64::MAX);
        let w = MemoryWatch::new(&b);
        w.check();
        // Holding more than the peak so far raises it, far above BASE_BYTES with nothing
        // reserved (other tests may run meanwhile, so only that much is certain).
        let more = peak_rss().unwrap() as usize + (64 << 20);
        let held = std::hint::black_box(vec![1u8; more]);
        let o = w.check().expect("a peak over the reservations");
        assert!(o.peak > o.reserved && o.reserved == BASE_BYTES, "{o:?}");
        drop(held);
    }

    #[test]
    fn a_peak_counts_once_and_only_over_the_reservations() {
        let mut last = 0;
        assert_eq!(judge(&mut last, 100, 80), Some(Overshoot { peak: 100, reserved: 80 }));
        assert_eq!(judge(&mut last, 100, 80), None, "a peak that did not rise was judged before");
        assert_eq!(judge(&mut last, 120, 150), None, "under the reservations");
        assert_eq!(judge(&mut last, 130, 120), Some(Overshoot { peak: 130, reserved: 120 }));
    }
}
