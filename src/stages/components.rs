//! Connected components (26-connectivity) of a binary volume streamed z-slice by z-slice, as
//! `scipy.ndimage.label(mask, structure=np.ones((3, 3, 3)))` finds them, with memory bounded by
//! the components crossing the current slice, never by the voxels or the volume.
//!
//! Each slice is cut into runs (maximal stretches of set voxels along x). A run joins the runs
//! of the row above in the same slice and of the rows y−1, y, y+1 of the previous slice whose
//! x ranges come within one voxel of its own (that is 26-connectivity); a union-find over the
//! previous slice's components and the new runs merges them. A component that no run of the new
//! slice continues is complete: its size and whether any of its voxels was *marked* (a second
//! mask, e.g. "touches attention") are handed out, and it is forgotten.
//!
//! Invariants: after each slice the table holds exactly the components with a run in that slice
//! (relabelled densely), so memory is O(runs of one slice); every component is reported exactly
//! once, when it ends (or at [`Components::finish`]); sizes count voxels.

/// A component that ended: its voxels, and whether any of them was marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    pub voxels: u64,
    pub marked: bool,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Run {
    y: usize,
    x0: usize,
    /// Exclusive.
    x1: usize,
    /// Component id (index into the table) once the slice is done.
    comp: usize,
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Node {
    parent: usize,
    voxels: u64,
    marked: bool,
}

/// Streamed 26-connected component labelling (see the module note). Serialisable as it is
/// between two slices (slab checkpoints).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Components {
    nx: usize,
    ny: usize,
    /// The previous slice's runs, sorted by (y, x0), with dense component ids.
    prev: Vec<Run>,
    /// `prev_rows[y]..prev_rows[y + 1]`: the previous slice's runs of row y.
    prev_rows: Vec<usize>,
    /// Totals of the components alive after the previous slice, by id.
    carried: Vec<Node>,
}

fn find(nodes: &mut [Node], mut i: usize) -> usize {
    while nodes[i].parent != i {
        nodes[i].parent = nodes[nodes[i].parent].parent;
        i = nodes[i].parent;
    }
    i
}

fn union(nodes: &mut [Node], a: usize, b: usize) {
    let (ra, rb) = (find(nodes, a), find(nodes, b));
    if ra != rb {
        let (keep, gone) = if ra < rb { (ra, rb) } else { (rb, ra) };
        nodes[gone].parent = keep;
        nodes[keep].voxels += nodes[gone].voxels;
        nodes[keep].marked |= nodes[gone].marked;
    }
}

/// Whether runs `a` and `b` (of adjacent or equal rows) touch with 8-connectivity in-plane.
#[inline]
fn touch(a: &Run, b: &Run) -> bool {
    a.x0 < b.x1 + 1 && b.x0 < a.x1 + 1
}

impl Components {
    pub fn new(nx: usize, ny: usize) -> Components {
        Components { nx, ny, prev: Vec::new(), prev_rows: vec![0; ny + 1], carried: Vec::new() }
    }

    /// Components crossing the last slice pushed.
    pub fn alive(&self) -> usize {
        self.carried.len()
    }

    /// After the last slice: reports the components still open.
    pub fn finish(&mut self, mut done: impl FnMut(Component)) {
        for n in self.carried.drain(..) {
            done(Component { voxels: n.voxels, marked: n.marked });
        }
        self.prev.clear();
        self.prev_rows.iter_mut().for_each(|r| *r = 0);
    }

    /// Pushes the next slice (`mask` nonzero = set, x fastest); `mark` (same layout) marks
    /// voxels. Calls `done` for every component that ended before this slice.
    pub fn push(&mut self, mask: &[u8], mark: Option<&[u8]>, mut done: impl FnMut(Component)) {
        let (nx, ny) = (self.nx, self.ny);
        assert_eq!(mask.len(), nx * ny, "a slice of the wrong size");
        // Nodes 0..alive: the previous slice's components; then one per new run.
        let alive = self.carried.len();
        let mut nodes: Vec<Node> = std::mem::take(&mut self.carried);
        let mut runs: Vec<Run> = Vec::new();
        let mut rows = vec![0usize; ny + 1];
        for y in 0..ny {
            rows[y] = runs.len();
            let row = &mask[y * nx..(y + 1) * nx];
            if super::all_zero(row) {
                continue;
            }
            let mut x = 0;
            while x < nx {
                if row[x] == 0 {
                    x += 1;
                    continue;
                }
                let x0 = x;
                while x < nx && row[x] != 0 {
                    x += 1;
                }
                let marked = mark.is_some_and(|m| m[y * nx + x0..y * nx + x].iter().any(|&v| v != 0));
                let id = nodes.len();
                nodes.push(Node { parent: id, voxels: (x - x0) as u64, marked });
                runs.push(Run { y, x0, x1: x, comp: id });
            }
        }
        rows[ny] = runs.len();
        for i in 0..runs.len() {
            let r = runs[i];
            // The row above in this slice.
            if r.y > 0 {
                for above in &runs[rows[r.y - 1]..rows[r.y]] {
                    if touch(&r, above) {
                        union(&mut nodes, r.comp, above.comp);
                    }
                }
            }
            // Rows y−1, y, y+1 of the previous slice.
            for py in r.y.saturating_sub(1)..=(r.y + 1).min(ny - 1) {
                for p in &self.prev[self.prev_rows[py]..self.prev_rows[py + 1]] {
                    if touch(&r, p) {
                        union(&mut nodes, r.comp, p.comp);
                    }
                }
            }
        }
        // Relabel the components that go on densely; report those that ended.
        let mut new_id = vec![usize::MAX; nodes.len()];
        let mut next = 0;
        for r in &mut runs {
            let root = find(&mut nodes, r.comp);
            if new_id[root] == usize::MAX {
                new_id[root] = next;
                next += 1;
            }
            r.comp = root;
        }
        for i in 0..alive {
            if find(&mut nodes, i) == i && new_id[i] == usize::MAX {
                done(Component { voxels: nodes[i].voxels, marked: nodes[i].marked });
            }
        }
        // Carry each continuing component's totals to its new id.
        let mut carried = vec![Node { parent: 0, voxels: 0, marked: false }; next];
        for (root, &id) in new_id.iter().enumerate() {
            if id != usize::MAX {
                carried[id] = Node { parent: id, voxels: nodes[root].voxels, marked: nodes[root].marked };
            }
        }
        for r in &mut runs {
            r.comp = new_id[r.comp];
        }
        self.carried = carried;
        self.prev = runs;
        self.prev_rows = rows;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: flood fill with the 26 neighbours; (size, marked) of every component.
    fn flood(m: &[u8], mark: &[u8], [nx, ny, nz]: [usize; 3]) -> Vec<(u64, bool)> {
        let mut seen = vec![false; m.len()];
        let mut out = Vec::new();
        for start in 0..m.len() {
            if m[start] == 0 || seen[start] {
                continue;
            }
            let (mut size, mut marked, mut stack) = (0u64, false, vec![start]);
            seen[start] = true;
            while let Some(i) = stack.pop() {
                size += 1;
                marked |= mark[i] != 0;
                let (x, y, z) = ((i % nx) as isize, ((i / nx) % ny) as isize, (i / (nx * ny)) as isize);
                for dz in -1..=1 {
                    for dy in -1..=1 {
                        for dx in -1..=1 {
                            let (a, b, c) = (x + dx, y + dy, z + dz);
                            if a < 0 || b < 0 || c < 0 || a >= nx as isize || b >= ny as isize || c >= nz as isize {
                                continue;
                            }
                            let j = (c as usize * ny + b as usize) * nx + a as usize;
                            if m[j] != 0 && !seen[j] {
                                seen[j] = true;
                                stack.push(j);
                            }
                        }
                    }
                }
            }
            out.push((size, marked));
        }
        out.sort();
        out
    }

    fn streamed(m: &[u8], mark: &[u8], [nx, ny, nz]: [usize; 3]) -> (Vec<(u64, bool)>, usize) {
        let mut c = Components::new(nx, ny);
        let mut out = Vec::new();
        let mut most_alive = 0;
        for z in 0..nz {
            let s = z * nx * ny..(z + 1) * nx * ny;
            c.push(&m[s.clone()], Some(&mark[s]), |k| out.push((k.voxels, k.marked)));
            most_alive = most_alive.max(c.alive());
        }
        c.finish(|k| out.push((k.voxels, k.marked)));
        out.sort();
        (out, most_alive)
    }

    #[test]
    fn streamed_components_equal_a_26_connected_flood_fill() {
        let mut seed = 99u64;
        let mut rand = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for &(shape, density) in &[
            ([17, 13, 11], 0.15),
            ([17, 13, 11], 0.3),
            ([40, 3, 20], 0.25),
            ([1, 1, 30], 0.5),
            ([64, 64, 1], 0.2),
            ([9, 9, 9], 0.6),
        ] {
            let n = shape.iter().product();
            let m: Vec<u8> = (0..n).map(|_| (rand() < density) as u8).collect();
            let mark: Vec<u8> = (0..n).map(|_| (rand() < 0.05) as u8).collect();
            let want = flood(&m, &mark, shape);
            let (got, _) = streamed(&m, &mark, shape);
            assert_eq!(got, want, "{shape:?} at density {density}");
        }
    }

    #[test]
    fn a_snake_that_merges_late_is_one_component() {
        // Two vertical bars that only join in the last slice, diagonally (26-connectivity).
        let [nx, ny, nz] = [8, 8, 12];
        let mut m = vec![0u8; nx * ny * nz];
        for z in 0..nz {
            m[(z * ny + 1) * nx + 1] = 1;
            m[(z * ny + 5) * nx + 5] = 1;
        }
        for k in 2..5 {
            m[((nz - 1) * ny + k) * nx + k] = 1;
        }
        let (got, most_alive) = streamed(&m, &vec![0; m.len()], [nx, ny, nz]);
        assert_eq!(got, vec![(2 * nz as u64 + 3, false)]);
        assert_eq!(most_alive, 2, "only components crossing a slice are kept");
    }
}
