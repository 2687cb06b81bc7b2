//! The memory budget: every case reserves the bytes its slabs will need before allocating
//! them, and waits while other cases hold the rest.
//!
//! Invariant: the sum of reservations never exceeds the limit minus [`BASE_BYTES`]; a case
//! needing more than that alone is refused with the size it needs.
//!
//! What a reservation counts ([`crate::pipeline::case::case_memory`], from the headers alone):
//! the slab sets in flight, the gzip readers' windows, the encoding scratch of each pool
//! thread, what each stage holds (its windows, maps and pending chunks), and a tenth more for
//! the allocator. [`BASE_BYTES`] covers the rest of the process. Not counted, because it is
//! not the process's memory: the kernel's page cache of the files read and written (a memory
//! cgroup charges it, but reclaims it before it kills; `slabflow slurm` asks for a quarter
//! more than the limit for it). The limit is checked, not only planned: after each case
//! [`MemoryWatch`] compares the process's peak resident memory with what the cases running
//! meanwhile had reserved, and the run warns when the peak went over.

use std::sync::{Condvar, Mutex, OnceLock};

/// Memory the process uses whatever the data: code, thread stacks, allocator slack, zarrs'
/// and flate2's state.
pub const BASE_BYTES: u64 = 48 << 20;

pub struct MemoryBudget {
    available: u64,
    used: Mutex<Used>,
    freed: Condvar,
}

#[derive(Default)]
struct Used {
    now: u64,
    /// The most reserved at once since [`MemoryBudget::take_high_water`] last ran.
    high_water: u64,
}

pub struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            available: limit.saturating_sub(BASE_BYTES),
            used: Mutex::new(Used::default()),
            freed: Condvar::new(),
        }
    }

    /// Bytes cases may reserve in total.
    pub fn available(&self) -> u64 {
        self.available
    }

    /// Blocks until `bytes` fit, then reserves them; `Err(available)` if they never can.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, u64> {
        if bytes > self.available {
            return Err(self.available);
        }
        let mut used = self.used.lock().unwrap();
        while used.now + bytes > self.available {
            used = self.freed.wait(used).unwrap();
        }
        used.now += bytes;
        used.high_water = used.high_water.max(used.now);
        Ok(Reservation { budget: self, bytes })
    }

    /// The most reserved at once since the last call; starts the next period at what is
    /// reserved now.
    pub fn take_high_water(&self) -> u64 {
        let mut used = self.used.lock().unwrap();
        let now = used.now;
        std::mem::replace(&mut used.high_water, now)
    }
}

/// How freed memory goes back to the operating system, when the allocator keeps it otherwise.
static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers how to hand memory the process freed back to the operating system (the binary's
/// allocator: `slabflow` purges jemalloc's dirty pages). A case runs it as it ends, before
/// its reservation is returned: the memory the next case reserves must not still be resident
/// in the allocator's caches (jemalloc returns freed pages only after ~10 s otherwise).
pub fn set_memory_release(release: fn()) {
    let _ = RELEASE.set(release);
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        // Everything the case allocated was dropped before its reservation (declared first).
        if let Some(release) = RELEASE.get() {
            release();
        }
        self.budget.used.lock().unwrap().now -= self.bytes;
        self.budget.freed.notify_all();
    }
}

/// Checks the promise of the budget against the process's real peak: when the peak resident
/// memory (`VmHWM`) rose between two checks, it must stay under [`BASE_BYTES`] plus the most the
/// running cases had reserved at once meanwhile. (A peak that did not rise was checked before.
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
        let reserved = self.budget.take_high_water() + BASE_BYTES;
        let rose = peak > std::mem::replace(&mut *last, peak);
        (rose && peak > reserved).then_some(Overshoot { peak, reserved })
    }
}

/// Peak resident memory of this process (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
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

    #[test]
    fn watch_sees_a_peak_over_the_reservations() {
        if peak_rss().is_none() {
            return; // not Linux
        }
        let b = MemoryBudget::new(u64::MAX);
        let w = MemoryWatch::new(&b);
        w.check();
        // A process far above BASE_BYTES with nothing reserved: an overshoot, once.
        let held = std::hint::black_box(vec![1u8; 2 * BASE_BYTES as usize]);
        let o = w.check().expect("a peak over the reservations");
        assert!(o.peak > o.reserved && o.reserved == BASE_BYTES, "{o:?}");
        // A peak that did not rise is not counted again.
        assert_eq!(w.check(), None);
        drop(held);
    }
}
