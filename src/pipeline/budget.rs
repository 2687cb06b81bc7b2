//! The memory budget: every case reserves the bytes its slabs will need before allocating
//! them, and waits while other cases hold the rest.
//!
//! Invariant: the sum of reservations never exceeds the limit minus [`BASE_BYTES`]; a case
//! needing more than that alone is refused with the size it needs.

use std::sync::{Condvar, Mutex};

/// Memory the process uses whatever the data: code, thread stacks, allocator slack, zarrs'
/// and flate2's state.
pub const BASE_BYTES: u64 = 48 << 20;

pub struct MemoryBudget {
    available: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

pub struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget { available: limit.saturating_sub(BASE_BYTES), used: Mutex::new(0), freed: Condvar::new() }
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
        while *used + bytes > self.available {
            used = self.freed.wait(used).unwrap();
        }
        *used += bytes;
        Ok(Reservation { budget: self, bytes })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        *self.budget.used.lock().unwrap() -= self.bytes;
        self.budget.freed.notify_all();
    }
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
}
