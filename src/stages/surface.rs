//! Normalized surface Dice in the stream, exactly as DeepMind's `surface-distance` computes it
//! (`compute_surface_dice_at_tolerance(compute_surface_distances(G, P, spacing), tol)`).
//!
//! Surfels live on the corner grid: corner (cx, cy, cz), 0 ≤ c ≤ n, sits between voxels c−1
//! and c of each axis; its 2×2×2 neighbourhood code has bit `128 >> (4a + 2b + c)` set when
//! voxel (cx−1+a, cy−1+b, cz−1+c) is in the mask (outside = 0), as scipy's `correlate` with
//! kernel `[[[128,64],[32,16]],[[8,4],[2,1]]]` gives it. A corner is a surfel when its code is
//! neither 0 nor 255; its area comes from the marching-cubes normals scaled by the spacing.
//! A surfel of G counts as within tolerance when some surfel of P lies at a Euclidean distance
//! (in mm, `sqrt((Δx·dx)² + (Δy·dy)² + (Δz·dz)²)`, as scipy's `distance_transform_edt`) ≤ tol,
//! and the other way round. DeepMind crops to the masks' bounding box first; since every
//! surfel lies inside it, that changes nothing here.
//!
//! Invariants: corner slice cz needs mask slices cz−1 and cz; whether a surfel is within
//! tolerance needs the other mask's corner slices within `rz = ⌊tol/dz⌋`. So [`SurfaceDice`]
//! keeps 2·rz + 2 code slices per mask and evaluates corner slice k once slice k + rz exists:
//! memory is a few slices, never the volume, and the result does not depend on slab depth.

use std::collections::VecDeque;

use super::surface_normals::NORMALS_EIGHTHS;

/// Surfel area of every neighbourhood code for `spacing` (x, y, z) in mm, as DeepMind's
/// `create_table_neighbour_code_to_surface_area`.
pub fn area_table(spacing: [f64; 3]) -> [f64; 256] {
    let [s0, s1, s2] = spacing;
    std::array::from_fn(|code| {
        let (count, normals) = NORMALS_EIGHTHS[code];
        let mut sum = 0.0;
        for n in &normals[..count as usize] {
            let v = [n[0] as f64 / 8.0 * s1 * s2, n[1] as f64 / 8.0 * s0 * s2, n[2] as f64 / 8.0 * s0 * s1];
            sum += (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        }
        sum
    })
}

/// Corner offsets (Δx, Δy, Δz) within `tol` mm, nearest first.
fn offsets(spacing: [f64; 3], tol: f64) -> Vec<(isize, isize, isize)> {
    let reach = |s: f64| if s > 0.0 { (tol / s).floor() as isize + 1 } else { 0 };
    let (rx, ry, rz) = (reach(spacing[0]), reach(spacing[1]), reach(spacing[2]));
    let mut out = Vec::new();
    for dz in -rz..=rz {
        for dy in -ry..=ry {
            for dx in -rx..=rx {
                let d = distance(spacing, dx, dy, dz);
                if d <= tol {
                    out.push((d, (dx, dy, dz)));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.into_iter().map(|(_, o)| o).collect()
}

/// The distance scipy's `distance_transform_edt(..., sampling=spacing)` reports for an offset:
/// per-axis products, squared, summed in axis order, square root.
#[inline]
fn distance(s: [f64; 3], dx: isize, dy: isize, dz: isize) -> f64 {
    let (a, b, c) = (dx as f64 * s[0], dy as f64 * s[1], dz as f64 * s[2]);
    (a * a + b * b + c * c).sqrt()
}

/// One mask's neighbourhood codes on one corner slice ((nx+1)·(ny+1) corners, x fastest),
/// kept for the band of corner rows that can hold a non-zero code: rows `y0 .. y0 + rows`, every
/// code outside it 0. Empty (no rows) when the slice has no surfel. Masks are sparse (an
/// organ spans a fraction of the rows), so the band is what every pass touches.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Codes {
    y0: usize,
    /// `rows × (nx+1)` codes.
    data: Vec<u8>,
}

impl Codes {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn rows(&self, cx: usize) -> std::ops::Range<usize> {
        self.y0..self.y0 + self.data.len() / cx
    }

    /// The code at corner (x, y); 0 outside the band.
    #[inline]
    fn at(&self, cx: usize, x: usize, y: usize) -> u8 {
        match y.checked_sub(self.y0) {
            Some(r) => self.data.get(r * cx + x).copied().unwrap_or(0),
            None => 0,
        }
    }
}

/// A corner slice's codes from the half codes of the mask slice below it and of the one above
/// (whose bits move one place right: c = 1), over the union of their bands.
fn combine(lower: &Codes, upper: &Codes, cx: usize) -> Codes {
    match (lower.is_empty(), upper.is_empty()) {
        (true, true) => Codes::default(),
        (false, true) => lower.clone(),
        (true, false) => Codes { y0: upper.y0, data: upper.data.iter().map(|&u| u >> 1).collect() },
        (false, false) => {
            let (l, u) = (lower.rows(cx), upper.rows(cx));
            let y0 = l.start.min(u.start);
            let end = l.end.max(u.end);
            let mut data = vec![0u8; (end - y0) * cx];
            let at = |y: usize| (y - y0) * cx;
            for (d, &v) in data[at(l.start)..at(l.end)].iter_mut().zip(&lower.data) {
                *d = v;
            }
            for (d, &v) in data[at(u.start)..at(u.end)].iter_mut().zip(&upper.data) {
                *d |= v >> 1;
            }
            Codes { y0, data }
        }
    }
}

#[inline]
fn is_surfel(code: u8) -> bool {
    code != 0 && code != 255
}

/// Normalized surface Dice of two masks streamed z-slice by z-slice.
pub struct SurfaceDice {
    nx: usize,
    ny: usize,
    nz: usize,
    areas: [f64; 256],
    offsets: Vec<(isize, isize, isize)>,
    rz: usize,
    /// Half codes of the last mask slice pushed, per mask (the next corner slice's lower half).
    prev: [Codes; 2],
    /// Corner slices kept: (index, codes of G, codes of P).
    window: VecDeque<(usize, Codes, Codes)>,
    next_corner: usize,
    evaluated: usize,
    /// Σ area of surfels within tolerance, Σ area: for G and for P.
    within: [f64; 2],
    total: [f64; 2],
}

impl SurfaceDice {
    pub fn new(shape: [usize; 3], spacing: [f64; 3], tol: f64) -> SurfaceDice {
        let offsets = offsets(spacing, tol);
        let rz = offsets.iter().map(|o| o.2.unsigned_abs()).max().unwrap_or(0);
        SurfaceDice {
            nx: shape[0],
            ny: shape[1],
            nz: shape[2],
            areas: area_table(spacing),
            offsets,
            rz,
            prev: [Codes::default(), Codes::default()],
            window: VecDeque::new(),
            next_corner: 0,
            evaluated: 0,
            within: [0.0; 2],
            total: [0.0; 2],
        }
    }

    /// The stream's state between two slices (for a slab checkpoint): the kept code slices and
    /// the running sums; the tables are rebuilt from the grid.
    pub fn save(&self) -> Vec<u8> {
        super::encode_state(&(&self.prev, &self.window, self.next_corner, self.evaluated, self.within, self.total))
    }

    /// Takes a state [`SurfaceDice::save`] gave, into a stream made for the same grid.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        type State = ([Codes; 2], VecDeque<(usize, Codes, Codes)>, usize, usize, [f64; 2], [f64; 2]);
        let s: State = super::decode_state(state)?;
        (self.prev, self.window, self.next_corner, self.evaluated, self.within, self.total) = s;
        Ok(())
    }

    /// Pushes the next z-slice of G and of P (0/1 per voxel, x fastest).
    pub fn push(&mut self, g: &[u8], p: &[u8]) {
        assert!(self.next_corner < self.nz, "more slices than the volume has");
        let cx = self.nx + 1;
        let halves = [self.half_codes(g), self.half_codes(p)];
        let cg = combine(&self.prev[0], &halves[0], cx);
        let cp = combine(&self.prev[1], &halves[1], cx);
        self.window.push_back((self.next_corner, cg, cp));
        self.next_corner += 1;
        if self.next_corner == self.nz {
            // The last corner slice sees the last mask slice and the outside.
            let cg = combine(&halves[0], &Codes::default(), cx);
            let cp = combine(&halves[1], &Codes::default(), cx);
            self.window.push_back((self.nz, cg, cp));
            self.next_corner += 1;
        }
        self.prev = halves;
        self.evaluate_ready();
    }

    /// The half code a mask slice contributes to the corner slice above it (as the lower
    /// slice, c = 0): bit `128 >> (4a + 2b)` for voxel (cx−1+a, cy−1+b). As the upper slice
    /// (c = 1) it contributes the same bits shifted right by one. Empty when the slice is.
    fn half_codes(&self, mask: &[u8]) -> Codes {
        let (nx, ny) = (self.nx, self.ny);
        let row = |y: usize| &mask[y * nx..(y + 1) * nx];
        // The mask's rows r0..=r1 hold every set voxel; corner rows r0..=r1+1 see them.
        let Some(r0) = (0..ny).find(|&y| !super::all_zero(row(y))) else { return Codes::default() };
        let r1 = (r0..ny).rev().find(|&y| !super::all_zero(row(y))).unwrap_or(r0);
        let cx = nx + 1;
        let zero = vec![0u8; nx];
        let mut data = Vec::with_capacity((r1 - r0 + 2) * cx);
        for cy in r0..=r1 + 1 {
            // Rows y = cy − 1 (b = 0) and y = cy (b = 1). Voxel x is a = 1 of corner x
            // (8 for b = 0, 2 for b = 1) and a = 0 of corner x + 1 (128, 32): corner x takes
            // voxel x's low bits and voxel x − 1's high ones, so each corner is written once.
            let a = if cy > 0 { row(cy - 1) } else { &zero[..] };
            let b = if cy < ny { row(cy) } else { &zero[..] };
            let lo = |x: usize| (a[x] << 3) | (b[x] << 1);
            let hi = |x: usize| (a[x] << 7) | (b[x] << 5);
            data.push(lo(0));
            data.extend(
                a[1..]
                    .iter()
                    .zip(&b[1..])
                    .zip(a.iter().zip(b.iter()))
                    .map(|((&a1, &b1), (&a0, &b0))| (a1 << 3) | (b1 << 1) | (a0 << 7) | (b0 << 5)),
            );
            data.push(hi(nx - 1));
        }
        Codes { y0: r0, data }
    }

    /// Evaluates every corner slice whose neighbours within rz are all known.
    fn evaluate_ready(&mut self) {
        let last = self.nz; // the last corner slice
        while self.evaluated <= last {
            let k = self.evaluated;
            let all_known = self.next_corner > last;
            if !all_known && k + self.rz >= self.next_corner {
                return;
            }
            self.evaluate(k);
            self.evaluated += 1;
            while self.window.front().is_some_and(|(i, _, _)| i + self.rz < self.evaluated) {
                self.window.pop_front();
            }
        }
    }

    fn evaluate(&mut self, k: usize) {
        let (cx, cy, rz) = (self.nx + 1, self.ny + 1, self.rz as isize);
        // The corner slices k − rz ..= k + rz that exist, by Δz + rz.
        let near: Vec<Option<&(usize, Codes, Codes)>> = (-rz..=rz)
            .map(|dz| {
                let z = k as isize + dz;
                self.window.iter().find(|(i, _, _)| z >= 0 && *i == z as usize)
            })
            .collect();
        let Some((_, g, p)) = near[self.rz] else { return };
        let mut within = [0.0; 2];
        let mut total = [0.0; 2];
        for (m, mine) in [g, p].into_iter().enumerate() {
            if mine.is_empty() {
                continue;
            }
            for y in mine.rows(cx) {
                let row = &mine.data[(y - mine.y0) * cx..(y - mine.y0 + 1) * cx];
                for (x, &code) in row.iter().enumerate() {
                    if !is_surfel(code) {
                        continue;
                    }
                    let area = self.areas[code as usize];
                    total[m] += area;
                    let hit = self.offsets.iter().any(|&(dx, dy, dz)| {
                        let (xx, yy) = (x as isize + dx, y as isize + dy);
                        if xx < 0 || yy < 0 || xx >= cx as isize || yy >= cy as isize {
                            return false;
                        }
                        near[(dz + rz) as usize].is_some_and(|(_, og, op)| {
                            let other = if m == 0 { op } else { og };
                            is_surfel(other.at(cx, xx as usize, yy as usize))
                        })
                    });
                    if hit {
                        within[m] += area;
                    }
                }
            }
        }
        for m in 0..2 {
            self.within[m] += within[m];
            self.total[m] += total[m];
        }
    }

    /// NSD after every slice was pushed: `None` when both masks are empty.
    pub fn finish(&self) -> Option<f64> {
        assert_eq!(self.evaluated, self.nz + 1, "not every slice was pushed");
        let total = self.total[0] + self.total[1];
        (total > 0.0).then(|| (self.within[0] + self.within[1]) / total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_table_matches_known_values() {
        // One voxel corner: a single triangle with normal (1/8, 1/8, 1/8) at unit spacing.
        let t = area_table([1.0, 1.0, 1.0]);
        assert_eq!(t[0], 0.0);
        assert!((t[1] - (3.0f64 / 64.0).sqrt()).abs() < 1e-15);
        assert_eq!(t[255], 0.0);
    }

    #[test]
    fn identical_masks_have_nsd_one_and_disjoint_far_masks_zero() {
        let (nx, ny, nz) = (9, 8, 7);
        let cube = |x0: usize, x1: usize| -> Vec<Vec<u8>> {
            (0..nz)
                .map(|z| {
                    (0..nx * ny)
                        .map(|i| {
                            let (x, y) = (i % nx, i / nx);
                            ((x0..x1).contains(&x) && (2..6).contains(&y) && (2..5).contains(&z)) as u8
                        })
                        .collect()
                })
                .collect()
        };
        let (a, b) = (cube(1, 4), cube(6, 9));
        for (other, want) in [(&a, Some(1.0)), (&b, Some(0.0))] {
            let mut s = SurfaceDice::new([nx, ny, nz], [1.0, 1.0, 1.0], 1.0);
            for z in 0..nz {
                s.push(&a[z], &other[z]);
            }
            assert_eq!(s.finish(), want);
        }
        let empty = vec![0u8; nx * ny];
        let mut s = SurfaceDice::new([nx, ny, nz], [1.0, 1.0, 1.0], 1.0);
        for _ in 0..nz {
            s.push(&empty, &empty);
        }
        assert_eq!(s.finish(), None);
    }
}
