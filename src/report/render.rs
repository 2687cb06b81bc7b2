//! One slice of a case as a picture: CT in a window, the attention map as a translucent heat
//! overlay, the consensus pseudo label as a contour — oriented by the CT's affine in the
//! radiological convention and resampled to square pixels, encoded as PNG (`png` crate).
//!
//! The rendering is a fixed formula, so a reference can recompute it pixel for pixel
//! (`tests/python/report_pixels.py` does, with numpy, from the same Zarr arrays):
//! - **Orientation.** Each in-plane voxel axis points mostly along one world axis of the
//!   affine (RAS+): its column `d` of the affine, world axis `argmax |d|`. The axis along the
//!   patient's left-right goes across (else the anterior-posterior one), the other one down.
//!   Radiological convention: the patient's right on the image's left, anterior (or superior)
//!   at the top — an axis is flipped where its index grows towards R, A or S.
//! - **Resampling.** Square pixels of `s = max(width mm, height mm) / SIZE` mm; output pixel
//!   `p` of an axis of `n` voxels of `v` mm shows voxel `min(⌊(p + 0.5) · s / v⌋, n − 1)`
//!   (counted from the flipped end where the axis is flipped), nearest neighbour.
//! - **Colour** (an indexed PNG: a palette of 161 colours keeps 2,500 pictures small). Grey
//!   `g = clamp((HU − WINDOW.0) / (WINDOW.1 − WINDOW.0), 0, 1)`, in `GREYS` levels: index
//!   `q = ⌊g · (GREYS − 1) + 0.5⌋`, colour `⌊q · 255 / (GREYS − 1) + 0.5⌋`. Where the
//!   attention `a` (divided by its maximum over the source slice) is above 0: heat level
//!   `k = min(⌈a · HEATS⌉, HEATS)`, `a' = k / HEATS`, grey in `UNDER` levels
//!   (`q' = ⌊g · (UNDER − 1) + 0.5⌋`, `g' = q' / (UNDER − 1)`), the heat colour from red to
//!   yellow `h = (1, 0.9 a', 0)` blended in with opacity `α = 0.3 + 0.5 a'` (never white,
//!   so a released-mode map, all at the top level, does not read as bone):
//!   channel `⌊((1 − α) g' + α h) · 255 + 0.5⌋`, index `GREYS + (k − 1) · UNDER + q'`.
//!   Consensus pixels with a 4-neighbour outside the consensus (or on the image's edge) are
//!   the contour, index `GREYS + HEATS · UNDER`, colour `CONTOUR`.

/// The CT window, in HU: the abdominal one (AbdomenAtlas).
pub const WINDOW: (f64, f64) = (-175.0, 250.0);
/// The longer side of a picture, in pixels.
pub const SIZE: usize = 256;
/// The contour's colour.
pub const CONTOUR: [u8; 3] = [0, 255, 255];
/// Grey levels of the CT alone, heat levels, and grey levels under the heat.
pub const GREYS: usize = 32;
pub const HEATS: usize = 8;
pub const UNDER: usize = 16;

/// The palette: the greys, then the heat levels over their greys, then the contour.
fn palette() -> Vec<u8> {
    let mut p = Vec::with_capacity(3 * (GREYS + HEATS * UNDER + 1));
    for q in 0..GREYS {
        p.extend([((q * 255) as f64 / (GREYS - 1) as f64 + 0.5).floor() as u8; 3]);
    }
    for k in 1..=HEATS {
        let a = k as f64 / HEATS as f64;
        let alpha = 0.3 + 0.5 * a;
        let heat = [1.0, 0.9 * a, 0.0];
        for q in 0..UNDER {
            let g = q as f64 / (UNDER - 1) as f64;
            p.extend(heat.map(|h| (((1.0 - alpha) * g + alpha * h) * 255.0 + 0.5).floor() as u8));
        }
    }
    p.extend(CONTOUR);
    p
}

/// A slice as read: `cols × rows` voxels, row-major, of `col_mm × row_mm` each. `col_axis` and
/// `row_axis` are the voxel axes (0 = i/x, 1 = j/y, 2 = k/z of the NIfTI) along a row and
/// down the columns of the arrays.
pub struct Slice {
    pub cols: usize,
    pub rows: usize,
    pub col_axis: usize,
    pub row_axis: usize,
    pub ct: Vec<f64>,
    pub attention: Option<Vec<f64>>,
    pub consensus: Vec<u8>,
}

/// A rendered slice.
pub struct Picture {
    pub png: Vec<u8>,
    pub width: usize,
    pub height: usize,
    /// Millimetres per pixel.
    pub mm_per_px: f64,
    /// The anatomical direction at the left, right, top and bottom edges.
    pub edges: [char; 4],
    /// Whether it shows any attention.
    pub attention: bool,
    /// Whether there was an attention map to show.
    pub map: bool,
}

/// Where a voxel axis points: world axis (0 = x R-L, 1 = y A-P, 2 = z S-I) and whether its
/// index grows towards R, A or S (the world axis' positive side in RAS+).
fn direction(affine: &[[f64; 4]; 4], axis: usize) -> (usize, bool) {
    let d = [affine[0][axis], affine[1][axis], affine[2][axis]];
    let w = (0..3).fold(0, |b, k| if d[k].abs() > d[b].abs() { k } else { b });
    (w, d[w] > 0.0)
}

/// The letters at the low and high ends of world axis `w` as shown (R left, A and S on top).
fn letters(w: usize) -> [char; 2] {
    [['R', 'L'], ['A', 'P'], ['S', 'I']][w]
}

/// The anatomical plane of the slices at fixed index along voxel axis `axis` of `affine`.
pub fn plane(affine: &[[f64; 4]; 4], axis: usize) -> &'static str {
    ["sagittal", "coronal", "axial"][direction(affine, axis).0]
}

/// Renders `s`, whose voxel spacing is `spacing` (mm along i, j, k), oriented by `affine`.
pub fn render(s: &Slice, spacing: [f64; 3], affine: &[[f64; 4]; 4]) -> Result<Picture, String> {
    let (col_dir, row_dir) = (direction(affine, s.col_axis), direction(affine, s.row_axis));
    // Across: the axis nearer the left-right one (then the anterior-posterior one).
    let across_is_col = col_dir.0 <= row_dir.0;
    let (across, down) = if across_is_col { (col_dir, row_dir) } else { (row_dir, col_dir) };
    let (n_across, n_down) = if across_is_col { (s.cols, s.rows) } else { (s.rows, s.cols) };
    let (v_across, v_down) = if across_is_col {
        (spacing[s.col_axis], spacing[s.row_axis])
    } else {
        (spacing[s.row_axis], spacing[s.col_axis])
    };
    let mm = (n_across as f64 * v_across).max(n_down as f64 * v_down) / SIZE as f64;
    let width = ((n_across as f64 * v_across / mm).round() as usize).max(1);
    let height = ((n_down as f64 * v_down / mm).round() as usize).max(1);
    // The source index along an axis for output pixel p; flipped where the index grows
    // towards R, A or S (those go left and up).
    let source = |p: usize, n: usize, v: f64, flip: bool| {
        let k = (((p as f64 + 0.5) * mm / v).floor() as usize).min(n - 1);
        if flip { n - 1 - k } else { k }
    };
    let xs: Vec<usize> = (0..width).map(|p| source(p, n_across, v_across, across.1)).collect();
    let ys: Vec<usize> = (0..height).map(|p| source(p, n_down, v_down, down.1)).collect();
    let at = |x: usize, y: usize| {
        let (a, d) = (xs[x], ys[y]);
        if across_is_col { d * s.cols + a } else { a * s.cols + d }
    };
    let max = s.attention.as_ref().map_or(0.0, |a| a.iter().copied().fold(0.0, f64::max));
    let inside = |x: usize, y: usize| s.consensus[at(x, y)] != 0;
    let contour = (GREYS + HEATS * UNDER) as u8;
    let mut index = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            let i = at(x, y);
            let edge = inside(x, y)
                && (x == 0
                    || y == 0
                    || x + 1 == width
                    || y + 1 == height
                    || !inside(x - 1, y)
                    || !inside(x + 1, y)
                    || !inside(x, y - 1)
                    || !inside(x, y + 1));
            if edge {
                index.push(contour);
                continue;
            }
            let g = ((s.ct[i] - WINDOW.0) / (WINDOW.1 - WINDOW.0)).clamp(0.0, 1.0);
            let a = match &s.attention {
                Some(att) if max > 0.0 => att[i] / max,
                _ => 0.0,
            };
            index.push(if a > 0.0 {
                let k = ((a * HEATS as f64).ceil() as usize).min(HEATS);
                let q = (g * (UNDER - 1) as f64 + 0.5).floor() as usize;
                (GREYS + (k - 1) * UNDER + q) as u8
            } else {
                (g * (GREYS - 1) as f64 + 0.5).floor() as u8
            });
        }
    }
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, width as u32, height as u32);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(palette());
        enc.set_compression(png::Compression::High);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&index).map_err(|e| e.to_string())?;
    }
    let [left, right] = letters(across.0);
    let [top, bottom] = letters(down.0);
    Ok(Picture {
        png,
        width,
        height,
        mm_per_px: mm,
        edges: [left, right, top, bottom],
        attention: max > 0.0,
        map: s.attention.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An identity affine is RAS+: i grows towards R and j towards A, so both are flipped: the
    /// voxel (0, 0) — the most left and posterior — is shown at the bottom right.
    #[test]
    fn ras_slices_show_right_on_the_left_and_anterior_on_top() {
        let affine = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        let (cols, rows) = (4, 2);
        let mut ct = vec![-1000.0; cols * rows];
        ct[0] = 1000.0; // i = 0, j = 0
        let s = Slice { cols, rows, col_axis: 0, row_axis: 1, ct, attention: None, consensus: vec![0; cols * rows] };
        let p = render(&s, [1.0, 1.0, 1.0], &affine).unwrap();
        assert_eq!((p.width, p.height, p.edges), (SIZE, SIZE / 2, ['R', 'L', 'A', 'P']));
        let mut img = png::Decoder::new(std::io::Cursor::new(p.png));
        img.set_transformations(png::Transformations::EXPAND);
        let mut r = img.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        r.next_frame(&mut buf).unwrap();
        let px = |x: usize, y: usize| buf[(y * p.width + x) * 3];
        assert_eq!((px(p.width - 1, p.height - 1), px(0, 0)), (255, 0), "voxel (0, 0) at the bottom right");
    }
}
