//! Binary opening in the stream: `binary_erosion(iterations=r)` then
//! `binary_dilation(iterations=r)` with scipy's full 3×3×3 structure and `border_value=0`,
//! computed slice by slice on bit-packed masks.
//!
//! r iterations with the 3×3×3 cube equal one pass with the (2r+1)³ cube, and a cube is
//! separable into x, y and z runs; with outside = 0 an eroded voxel is 0 whenever its cube
//! leaves the volume, and dilation simply ignores the outside. So each z-slice is eroded and
//! dilated in-plane (shifts and ANDs/ORs of 64-voxel words), and the z part is an AND (OR) over
//! the last 2r+1 in-plane results.
//!
//! Invariant: [`Opening`] emits opened slice `m` once slice `m + 2r` has been pushed (or at the
//! end of the volume), in order, each exactly once; it holds at most 2(2r+1) slices.

use std::collections::VecDeque;

/// A bit-packed z-slice: `ny` rows of `words` u64, bit `x % 64` of word `x / 64` is voxel x;
/// bits past `nx` are always 0.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BitSlice {
    pub nx: usize,
    pub ny: usize,
    pub words: usize,
    pub bits: Vec<u64>,
}

impl BitSlice {
    pub fn new(nx: usize, ny: usize) -> BitSlice {
        let words = nx.div_ceil(64);
        BitSlice { nx, ny, words, bits: vec![0; words * ny] }
    }

    #[inline]
    pub fn set(&mut self, x: usize, y: usize) {
        self.bits[y * self.words + x / 64] |= 1 << (x % 64);
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> bool {
        self.bits[y * self.words + x / 64] >> (x % 64) & 1 == 1
    }

    pub fn clear(&mut self) {
        self.bits.fill(0);
    }

    /// The slice as one byte (0 or 1) per voxel, row after row, into `out` (`nx · ny` long).
    pub fn unpack_into(&self, out: &mut [u8]) {
        for (y, row) in out.chunks_mut(self.nx).enumerate() {
            let words = self.row(y);
            for (x, o) in row.iter_mut().enumerate() {
                *o = (words[x / 64] >> (x % 64) & 1) as u8;
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.bits.iter().map(|w| w.count_ones() as u64).sum()
    }

    fn row(&self, y: usize) -> &[u64] {
        &self.bits[y * self.words..(y + 1) * self.words]
    }

    fn tail_mask(&self) -> u64 {
        match self.nx % 64 {
            0 => u64::MAX,
            n => (1u64 << n) - 1,
        }
    }
}

/// `row` shifted so that bit x holds the old bit `x + d` (d may be negative); zeros enter.
fn shifted(row: &[u64], d: isize, w: usize) -> u64 {
    let get = |i: isize| if i >= 0 && (i as usize) < row.len() { row[i as usize] } else { 0 };
    let (q, r) = (d.div_euclid(64), d.rem_euclid(64) as u32);
    let i = w as isize + q;
    if r == 0 { get(i) } else { (get(i) >> r) | (get(i + 1) << (64 - r)) }
}

/// In-plane erosion by a (2r+1)² square, outside = 0.
pub fn erode_xy(src: &BitSlice, dst: &mut BitSlice, r: usize) {
    let mut tmp = BitSlice::new(src.nx, src.ny);
    // x: AND of shifts. Bits past nx are 0 and shifts bring in zeros, so the outside is 0
    // and voxels within r of an edge vanish.
    for y in 0..src.ny {
        let row = src.row(y);
        for w in 0..src.words {
            let mut acc = row[w];
            for d in 1..=r as isize {
                acc &= shifted(row, d, w) & shifted(row, -d, w);
            }
            tmp.bits[y * src.words + w] = acc;
        }
    }
    // y: AND over rows y-r..=y+r; rows outside make 0.
    for y in 0..src.ny {
        for w in 0..src.words {
            dst.bits[y * src.words + w] = if y < r || y + r >= src.ny {
                0
            } else {
                (y - r..=y + r).fold(u64::MAX, |a, yy| a & tmp.bits[yy * src.words + w])
            };
        }
    }
}

/// In-plane dilation by a (2r+1)² square, outside ignored.
pub fn dilate_xy(src: &BitSlice, dst: &mut BitSlice, r: usize) {
    let mut tmp = BitSlice::new(src.nx, src.ny);
    let tail = src.tail_mask();
    for y in 0..src.ny {
        let row = src.row(y);
        for w in 0..src.words {
            let mut acc = row[w];
            for d in 1..=r as isize {
                acc |= shifted(row, d, w) | shifted(row, -d, w);
            }
            if w + 1 == src.words {
                acc &= tail;
            }
            tmp.bits[y * src.words + w] = acc;
        }
    }
    for y in 0..src.ny {
        let (lo, hi) = (y.saturating_sub(r), (y + r).min(src.ny - 1));
        for w in 0..src.words {
            dst.bits[y * src.words + w] = (lo..=hi).fold(0, |a, yy| a | tmp.bits[yy * src.words + w]);
        }
    }
}

/// Opening of a volume streamed slice by slice (see the module note). Serialisable whole: a
/// slab checkpoint keeps it as it is between two slices.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Opening {
    nx: usize,
    ny: usize,
    nz: usize,
    r: usize,
    pushed: usize,
    /// In-plane eroded slices, by index.
    exy: VecDeque<(usize, BitSlice)>,
    next_e: usize,
    /// In-plane dilated eroded slices, by index.
    dxy: VecDeque<(usize, BitSlice)>,
    next_o: usize,
}

impl Opening {
    pub fn new(nx: usize, ny: usize, nz: usize, r: usize) -> Opening {
        Opening { nx, ny, nz, r, pushed: 0, exy: VecDeque::new(), next_e: 0, dxy: VecDeque::new(), next_o: 0 }
    }

    /// Pushes the next slice; calls `emit(m, opened_slice)` for every slice that became final.
    pub fn push(&mut self, slice: &BitSlice, emit: &mut impl FnMut(usize, &BitSlice)) {
        assert!(self.pushed < self.nz, "more slices than the volume has");
        let (nx, ny, nz, r) = (self.nx, self.ny, self.nz, self.r);
        let k = self.pushed;
        self.pushed += 1;
        let mut e = BitSlice::new(nx, ny);
        erode_xy(slice, &mut e, r);
        self.exy.push_back((k, e));
        let last = k + 1 == nz;
        while self.next_e < nz && (self.next_e + r <= k || last) {
            let j = self.next_e;
            self.next_e += 1;
            let mut ej = BitSlice::new(nx, ny);
            if j >= r && j + r < nz {
                ej.bits.fill(u64::MAX);
                for (z, s) in &self.exy {
                    if *z + r >= j && *z <= j + r {
                        ej.bits.iter_mut().zip(&s.bits).for_each(|(a, b)| *a &= b);
                    }
                }
            }
            while self.exy.front().is_some_and(|(z, _)| *z + r < j + 1) {
                self.exy.pop_front();
            }
            let mut d = BitSlice::new(nx, ny);
            dilate_xy(&ej, &mut d, r);
            self.dxy.push_back((j, d));
            let e_last = j + 1 == nz;
            while self.next_o < nz && (self.next_o + r <= j || e_last) {
                let m = self.next_o;
                self.next_o += 1;
                let mut o = BitSlice::new(nx, ny);
                for (z, s) in &self.dxy {
                    if *z + r >= m && *z <= m + r {
                        o.bits.iter_mut().zip(&s.bits).for_each(|(a, b)| *a |= b);
                    }
                }
                emit(m, &o);
                while self.dxy.front().is_some_and(|(z, _)| *z + r < m + 1) {
                    self.dxy.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over the (2r+1)³ cube around each voxel: `erode` = all inside and set
    /// (outside counts as 0), else any inside and set.
    fn cube(m: &[bool], [nx, ny, nz]: [usize; 3], r: usize, erode: bool) -> Vec<bool> {
        let ri = r as isize;
        let mut out = vec![false; m.len()];
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let mut acc = erode;
                    for dz in -ri..=ri {
                        for dy in -ri..=ri {
                            for dx in -ri..=ri {
                                let (a, b, c) = (x as isize + dx, y as isize + dy, z as isize + dz);
                                let inside = (0..nx as isize).contains(&a)
                                    && (0..ny as isize).contains(&b)
                                    && (0..nz as isize).contains(&c);
                                let v = inside && m[(c as usize * ny + b as usize) * nx + a as usize];
                                acc = if erode { acc && v } else { acc || v };
                            }
                        }
                    }
                    out[(z * ny + y) * nx + x] = acc;
                }
            }
        }
        out
    }

    fn reference(m: &[bool], shape: [usize; 3], r: usize) -> Vec<bool> {
        cube(&cube(m, shape, r, true), shape, r, false)
    }

    #[test]
    fn streamed_opening_equals_brute_force() {
        let mut seed = 7u64;
        let mut kept = 0;
        for &(nx, ny, nz, r, density) in
            &[(70, 9, 11, 2, 0.8), (64, 12, 6, 2, 0.9), (130, 7, 9, 1, 0.7), (5, 5, 5, 2, 1.0), (66, 10, 3, 2, 0.95)]
        {
            let m: Vec<bool> = (0..nx * ny * nz)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((seed >> 33) as f64 / (1u64 << 31) as f64) < density
                })
                .collect();
            let want = reference(&m, [nx, ny, nz], r);
            let mut got = vec![false; m.len()];
            let mut op = Opening::new(nx, ny, nz, r);
            let mut next = 0;
            for z in 0..nz {
                let mut s = BitSlice::new(nx, ny);
                for y in 0..ny {
                    for x in 0..nx {
                        if m[(z * ny + y) * nx + x] {
                            s.set(x, y);
                        }
                    }
                }
                op.push(&s, &mut |k, o| {
                    assert_eq!(k, next, "slices come out in order");
                    next += 1;
                    for y in 0..ny {
                        for x in 0..nx {
                            got[(k * ny + y) * nx + x] = o.get(x, y);
                        }
                    }
                });
            }
            assert_eq!(next, nz, "every slice comes out");
            assert_eq!(got, want, "{nx}x{ny}x{nz} r={r}");
            kept += want.iter().filter(|&&b| b).count();
        }
        assert!(kept > 100, "the cases should keep some voxels, kept {kept}");
    }
}
