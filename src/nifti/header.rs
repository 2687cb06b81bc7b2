//! NIfTI-1 and NIfTI-2 headers: parsing (both byte orders), validation, the affine, and
//! serialisation back to bytes for the `nifti` array of a NIfTI-Zarr group.
//!
//! Invariants: a [`Header`] that left [`Header::parse`] has a supported datatype, a 3-D grid
//! (trailing dimensions of size 1 allowed) with every axis in `1..=MAX_AXIS`, and a data offset
//! inside the limits; nothing is allocated from header values before they pass these checks.
//!
//! NIfTI-1 headers are parsed by the `nifti` crate. `nifti` 0.18 cannot read NIfTI-2
//! (upstream issue #89), so the 540-byte NIfTI-2 layout is parsed here, into the same [`Header`].

use std::io::Read;

use super::{DataType, NiftiError};

/// Largest accepted extent of one axis. Clinical CT is ≤ 2048 in-plane and a few thousand
/// slices; anything above this is a corrupt or hostile header, refused before allocation.
pub const MAX_AXIS: i64 = 1 << 16;
/// Largest accepted voxel count of one volume (2^36 voxels ≈ 128 GiB as int16).
pub const MAX_VOXELS: i64 = 1 << 36;

pub const NIFTI1_HEADER_SIZE: usize = 348;
pub const NIFTI2_HEADER_SIZE: usize = 540;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Nifti1,
    Nifti2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

/// The fields of a NIfTI header that slabflow keeps, widened to the NIfTI-2 types.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: Version,
    pub endian: Endian,
    pub dim_info: u8,
    pub dim: [i64; 8],
    pub intent_p: [f64; 3],
    pub intent_code: i32,
    pub datatype: DataType,
    pub slice_start: i64,
    pub pixdim: [f64; 8],
    pub vox_offset: u64,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub slice_end: i64,
    pub slice_code: i32,
    pub xyzt_units: i32,
    pub cal_max: f64,
    pub cal_min: f64,
    pub slice_duration: f64,
    pub toffset: f64,
    pub descrip: [u8; 80],
    pub aux_file: [u8; 24],
    pub qform_code: i32,
    pub sform_code: i32,
    pub quatern: [f64; 3],
    pub qoffset: [f64; 3],
    pub srow: [[f64; 4]; 3],
    pub intent_name: [u8; 16],
}

impl Header {
    /// Reads and validates a header from the start of the (already decompressed) stream.
    pub fn parse(mut input: impl Read) -> Result<Header, NiftiError> {
        let mut first = [0u8; 4];
        read_exact(&mut input, &mut first)?;
        let le = i32::from_le_bytes(first);
        let be = i32::from_be_bytes(first);
        let header = match (le, be) {
            (348, _) | (_, 348) => {
                // Hand the 4 bytes back to the `nifti` crate's parser in front of the rest.
                let h = nifti::NiftiHeader::from_reader(first.chain(input))
                    .map_err(|e| NiftiError::Header(e.to_string()))?;
                Header::from_nifti1(&h)?
            }
            (540, _) => Header::parse_nifti2(first, input, Endian::Little)?,
            (_, 540) => Header::parse_nifti2(first, input, Endian::Big)?,
            _ => {
                return Err(NiftiError::NotNifti(format!(
                    "sizeof_hdr is {le}, expected 348 (NIfTI-1) or 540 (NIfTI-2)"
                )));
            }
        };
        header.validate()?;
        Ok(header)
    }

    fn from_nifti1(h: &nifti::NiftiHeader) -> Result<Header, NiftiError> {
        if &h.magic != b"n+1\0" && &h.magic != b"ni1\0" {
            return Err(NiftiError::NotNifti(format!(
                "NIfTI-1 magic is {:?}, expected \"n+1\"",
                String::from_utf8_lossy(&h.magic)
            )));
        }
        let datatype = DataType::from_code(h.datatype as i32)?;
        let mut dim = [0i64; 8];
        for (d, &v) in dim.iter_mut().zip(&h.dim) {
            // `nifti` stores dims as u16; the file holds i16, so negative dims show up ≥ 2^15.
            *d = v as i16 as i64;
        }
        if !h.vox_offset.is_finite() || h.vox_offset < 0.0 || h.vox_offset.fract() != 0.0 {
            return Err(NiftiError::Header(format!("vox_offset {} is not a byte offset", h.vox_offset)));
        }
        let mut descrip = [0u8; 80];
        let n = h.descrip.len().min(80);
        descrip[..n].copy_from_slice(&h.descrip[..n]);
        Ok(Header {
            version: Version::Nifti1,
            endian: if h.endianness == nifti::Endianness::Big { Endian::Big } else { Endian::Little },
            dim_info: h.dim_info,
            dim,
            intent_p: [h.intent_p1 as f64, h.intent_p2 as f64, h.intent_p3 as f64],
            intent_code: h.intent_code as i32,
            datatype,
            slice_start: h.slice_start as i64,
            pixdim: h.pixdim.map(|v| v as f64),
            // A single-file NIfTI-1 with offset 0 means "right after the header" (nibabel fixes
            // it to 352 the same way).
            vox_offset: if h.vox_offset == 0.0 { 352 } else { h.vox_offset as u64 },
            scl_slope: h.scl_slope as f64,
            scl_inter: h.scl_inter as f64,
            slice_end: h.slice_end as i64,
            slice_code: h.slice_code as i32,
            xyzt_units: h.xyzt_units as i32,
            cal_max: h.cal_max as f64,
            cal_min: h.cal_min as f64,
            slice_duration: h.slice_duration as f64,
            toffset: h.toffset as f64,
            descrip,
            aux_file: h.aux_file,
            qform_code: h.qform_code as i32,
            sform_code: h.sform_code as i32,
            quatern: [h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64],
            qoffset: [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64],
            srow: [h.srow_x.map(|v| v as f64), h.srow_y.map(|v| v as f64), h.srow_z.map(|v| v as f64)],
            intent_name: h.intent_name,
        })
    }

    fn parse_nifti2(first: [u8; 4], mut input: impl Read, endian: Endian) -> Result<Header, NiftiError> {
        let mut b = [0u8; NIFTI2_HEADER_SIZE];
        b[..4].copy_from_slice(&first);
        read_exact(&mut input, &mut b[4..])?;
        let r = Fields { b: &b, endian };
        if &b[4..7] != b"n+2" && &b[4..7] != b"ni2" {
            return Err(NiftiError::NotNifti(format!(
                "NIfTI-2 magic is {:?}, expected \"n+2\"",
                String::from_utf8_lossy(&b[4..12])
            )));
        }
        let datatype = DataType::from_code(r.i16(12) as i32)?;
        let vox_offset = r.i64(168);
        if vox_offset < 0 {
            return Err(NiftiError::Header(format!("vox_offset {vox_offset} is negative")));
        }
        Ok(Header {
            version: Version::Nifti2,
            endian,
            dim_info: b[524],
            dim: std::array::from_fn(|i| r.i64(16 + 8 * i)),
            intent_p: std::array::from_fn(|i| r.f64(80 + 8 * i)),
            intent_code: r.i32(504),
            datatype,
            slice_start: r.i64(224),
            pixdim: std::array::from_fn(|i| r.f64(104 + 8 * i)),
            vox_offset: if vox_offset == 0 { 544 } else { vox_offset as u64 },
            scl_slope: r.f64(176),
            scl_inter: r.f64(184),
            slice_end: r.i64(232),
            slice_code: r.i32(496),
            xyzt_units: r.i32(500),
            cal_max: r.f64(192),
            cal_min: r.f64(200),
            slice_duration: r.f64(208),
            toffset: r.f64(216),
            descrip: b[240..320].try_into().unwrap(),
            aux_file: b[320..344].try_into().unwrap(),
            qform_code: r.i32(344),
            sform_code: r.i32(348),
            quatern: std::array::from_fn(|i| r.f64(352 + 8 * i)),
            qoffset: std::array::from_fn(|i| r.f64(376 + 8 * i)),
            srow: std::array::from_fn(|row| std::array::from_fn(|c| r.f64(400 + 32 * row + 8 * c))),
            intent_name: b[508..524].try_into().unwrap(),
        })
    }

    fn validate(&self) -> Result<(), NiftiError> {
        let ndim = self.dim[0];
        if !(1..=7).contains(&ndim) {
            return Err(NiftiError::Header(format!("dim[0] = {ndim}, expected 1 to 7")));
        }
        for axis in 1..=3 {
            let n = if axis as i64 <= ndim { self.dim[axis] } else { 1 };
            if !(1..=MAX_AXIS).contains(&n) {
                return Err(NiftiError::Header(format!(
                    "dim[{axis}] = {n}: each axis must be between 1 and {MAX_AXIS}"
                )));
            }
        }
        for axis in 4..=ndim as usize {
            if self.dim[axis] > 1 {
                return Err(NiftiError::Unsupported(format!(
                    "a {ndim}-D volume with dim[{axis}] = {}: only 3-D volumes are supported",
                    self.dim[axis]
                )));
            }
        }
        let [nx, ny, nz] = self.shape();
        if (nx * ny) as i64 * nz as i64 > MAX_VOXELS {
            return Err(NiftiError::Header(format!("{nx}×{ny}×{nz} voxels exceeds the limit of {MAX_VOXELS}")));
        }
        let min_offset = match self.version {
            Version::Nifti1 => NIFTI1_HEADER_SIZE as u64,
            Version::Nifti2 => NIFTI2_HEADER_SIZE as u64,
        };
        if self.vox_offset < min_offset || self.vox_offset > 1 << 32 {
            return Err(NiftiError::Header(format!("vox_offset {} is outside {min_offset}..2^32", self.vox_offset)));
        }
        if self.scaling().is_some() && !self.scl_inter.is_finite() {
            return Err(NiftiError::Header(format!(
                "scl_slope {} is valid but scl_inter {} is not finite",
                self.scl_slope, self.scl_inter
            )));
        }
        Ok(())
    }

    /// `[nx, ny, nz]`, the file's fastest axis first.
    pub fn shape(&self) -> [usize; 3] {
        let d = |i: usize| {
            if (i as i64) <= self.dim[0] { self.dim[i].max(1) as usize } else { 1 }
        };
        [d(1), d(2), d(3)]
    }

    /// Voxel spacing in mm (`pixdim[1..=3]`, absolute values; units are taken as mm).
    pub fn spacing(&self) -> [f64; 3] {
        [self.pixdim[1].abs(), self.pixdim[2].abs(), self.pixdim[3].abs()]
    }

    /// `(slope, inter)` when the header asks for scaling. As nibabel: a slope of 0, NaN or ±inf
    /// means no scaling.
    pub fn scaling(&self) -> Option<(f64, f64)> {
        let s = self.scl_slope;
        if s == 0.0 || !s.is_finite() {
            return None;
        }
        if s == 1.0 && self.scl_inter == 0.0 {
            return None;
        }
        Some((s, self.scl_inter))
    }

    /// Bytes of one z-slice of data as stored in the file.
    pub fn slice_bytes(&self) -> usize {
        let [nx, ny, _] = self.shape();
        nx * ny * self.datatype.size()
    }

    /// The voxel-to-world affine as nibabel's `get_best_affine`: sform if `sform_code > 0`,
    /// else qform if `qform_code > 0`, else the pixdim-only base affine.
    pub fn affine(&self) -> [[f64; 4]; 4] {
        if self.sform_code > 0 {
            let s = &self.srow;
            return [s[0], s[1], s[2], [0.0, 0.0, 0.0, 1.0]];
        }
        if self.qform_code > 0 {
            return self.qform_affine();
        }
        let [nx, ny, nz] = self.shape();
        let [dx, dy, dz] = self.spacing();
        // nibabel's base affine: LAS-style, centred on the volume.
        [
            [-dx, 0.0, 0.0, (nx as f64 - 1.0) / 2.0 * dx],
            [0.0, dy, 0.0, -((ny as f64 - 1.0) / 2.0) * dy],
            [0.0, 0.0, dz, -((nz as f64 - 1.0) / 2.0) * dz],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    fn qform_affine(&self) -> [[f64; 4]; 4] {
        let [b, c, d] = self.quatern;
        let a2 = 1.0 - (b * b + c * c + d * d);
        // nibabel treats a tiny negative a² as zero.
        let a = if a2 < 0.0 { 0.0 } else { a2.sqrt() };
        let r = [
            [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
            [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
            [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ];
        let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let z = [self.pixdim[1], self.pixdim[2], self.pixdim[3] * qfac];
        let mut m = [[0.0; 4]; 4];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] = r[i][j] * z[j];
            }
            m[i][3] = self.qoffset[i];
        }
        m[3][3] = 1.0;
        m
    }

    /// True when `other` describes the same voxel grid: same shape and an affine equal within
    /// `1e-4` mm (headers written in float32 by different tools differ in the last bits).
    pub fn same_grid(&self, other: &Header) -> bool {
        if self.shape() != other.shape() {
            return false;
        }
        let (a, b) = (self.affine(), other.affine());
        a.iter().flatten().zip(b.iter().flatten()).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + x.abs()))
    }

    /// A copy describing data of `datatype` with no scaling, as stored in a Zarr array `0`.
    pub fn with_stored(&self, datatype: DataType, unscaled: bool) -> Header {
        let mut h = self.clone();
        // Array `0` is 3-D (z, y, x): a 4-D file with one frame becomes a 3-D header.
        let [nx, ny, nz] = self.shape();
        h.dim = [3, nx as i64, ny as i64, nz as i64, 1, 1, 1, 1];
        h.datatype = datatype;
        if unscaled {
            h.scl_slope = 1.0;
            h.scl_inter = 0.0;
        }
        h.endian = Endian::Little;
        h
    }

    /// Serialises as a little-endian single-file header (`n+1` / `n+2`) without the 4-byte
    /// extension flag, as nifti-zarr stores it in the `nifti` array. NIfTI-1 is kept when the
    /// grid fits its i16 dims, NIfTI-2 otherwise.
    pub fn to_bytes(&self) -> Vec<u8> {
        let v1 = self.version == Version::Nifti1 && self.dim.iter().all(|&d| d <= i16::MAX as i64);
        if v1 { self.to_nifti1_bytes() } else { self.to_nifti2_bytes() }
    }

    fn to_nifti1_bytes(&self) -> Vec<u8> {
        let mut w = Writer(vec![0u8; NIFTI1_HEADER_SIZE]);
        w.i32(0, NIFTI1_HEADER_SIZE as i32);
        w.0[39] = self.dim_info;
        for i in 0..8 {
            w.i16(40 + 2 * i, self.dim[i] as i16);
        }
        for i in 0..3 {
            w.f32(56 + 4 * i, self.intent_p[i] as f32);
        }
        w.i16(68, self.intent_code as i16);
        w.i16(70, self.datatype.code() as i16);
        w.i16(72, (self.datatype.size() * 8) as i16);
        w.i16(74, self.slice_start as i16);
        for i in 0..8 {
            w.f32(76 + 4 * i, self.pixdim[i] as f32);
        }
        w.f32(108, 352.0);
        w.f32(112, self.scl_slope as f32);
        w.f32(116, self.scl_inter as f32);
        w.i16(120, self.slice_end as i16);
        w.0[122] = self.slice_code as u8;
        w.0[123] = self.xyzt_units as u8;
        w.f32(124, self.cal_max as f32);
        w.f32(128, self.cal_min as f32);
        w.f32(132, self.slice_duration as f32);
        w.f32(136, self.toffset as f32);
        w.0[148..228].copy_from_slice(&self.descrip);
        w.0[228..252].copy_from_slice(&self.aux_file);
        w.i16(252, self.qform_code as i16);
        w.i16(254, self.sform_code as i16);
        for i in 0..3 {
            w.f32(256 + 4 * i, self.quatern[i] as f32);
            w.f32(268 + 4 * i, self.qoffset[i] as f32);
        }
        for (r, row) in self.srow.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                w.f32(280 + 16 * r + 4 * c, *v as f32);
            }
        }
        w.0[328..344].copy_from_slice(&self.intent_name);
        w.0[344..348].copy_from_slice(b"n+1\0");
        w.0
    }

    fn to_nifti2_bytes(&self) -> Vec<u8> {
        let mut w = Writer(vec![0u8; NIFTI2_HEADER_SIZE]);
        w.i32(0, NIFTI2_HEADER_SIZE as i32);
        w.0[4..12].copy_from_slice(b"n+2\0\r\n\x1a\n");
        w.i16(12, self.datatype.code() as i16);
        w.i16(14, (self.datatype.size() * 8) as i16);
        for i in 0..8 {
            w.i64(16 + 8 * i, self.dim[i]);
        }
        for i in 0..3 {
            w.f64(80 + 8 * i, self.intent_p[i]);
        }
        for i in 0..8 {
            w.f64(104 + 8 * i, self.pixdim[i]);
        }
        w.i64(168, 544);
        w.f64(176, self.scl_slope);
        w.f64(184, self.scl_inter);
        w.f64(192, self.cal_max);
        w.f64(200, self.cal_min);
        w.f64(208, self.slice_duration);
        w.f64(216, self.toffset);
        w.i64(224, self.slice_start);
        w.i64(232, self.slice_end);
        w.0[240..320].copy_from_slice(&self.descrip);
        w.0[320..344].copy_from_slice(&self.aux_file);
        w.i32(344, self.qform_code);
        w.i32(348, self.sform_code);
        for i in 0..3 {
            w.f64(352 + 8 * i, self.quatern[i]);
            w.f64(376 + 8 * i, self.qoffset[i]);
        }
        for (r, row) in self.srow.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                w.f64(400 + 32 * r + 8 * c, *v);
            }
        }
        w.i32(496, self.slice_code);
        w.i32(500, self.xyzt_units);
        w.i32(504, self.intent_code);
        w.0[508..524].copy_from_slice(&self.intent_name);
        w.0[524] = self.dim_info;
        w.0
    }

    /// A fresh NIfTI-1 header for a 3-D volume (used by `synth` and exports).
    pub fn new_3d(shape: [usize; 3], spacing: [f64; 3], affine: [[f64; 4]; 3], datatype: DataType) -> Header {
        let mut dim = [1i64; 8];
        dim[0] = 3;
        for i in 0..3 {
            dim[i + 1] = shape[i] as i64;
        }
        let mut pixdim = [1.0; 8];
        pixdim[1..4].copy_from_slice(&spacing);
        let (quatern, qoffset, qfac) = quaternion_from_affine(&affine, spacing);
        pixdim[0] = qfac;
        Header {
            version: Version::Nifti1,
            endian: Endian::Little,
            dim_info: 0,
            dim,
            intent_p: [0.0; 3],
            intent_code: 0,
            datatype,
            slice_start: 0,
            pixdim,
            vox_offset: 352,
            scl_slope: 1.0,
            scl_inter: 0.0,
            slice_end: 0,
            slice_code: 0,
            xyzt_units: 2 | 8, // mm, s
            cal_max: 0.0,
            cal_min: 0.0,
            slice_duration: 0.0,
            toffset: 0.0,
            descrip: [0; 80],
            aux_file: [0; 24],
            qform_code: 1,
            sform_code: 1,
            quatern,
            qoffset,
            srow: affine,
            intent_name: [0; 16],
        }
    }
}

/// Quaternion (b, c, d), offset and qfac of an affine whose columns are axis-aligned up to sign
/// (all `synth` writes). General rotations go through the sform, which is always written too.
fn quaternion_from_affine(a: &[[f64; 4]; 3], spacing: [f64; 3]) -> ([f64; 3], [f64; 3], f64) {
    // Normalised rotation-reflection matrix.
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = a[i][j] / spacing[j];
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    if qfac < 0.0 {
        for row in &mut r {
            row[2] = -row[2];
        }
    }
    // Standard rotation-matrix → quaternion conversion (as nibabel's mat2quat for proper rotations).
    let trace = r[0][0] + r[1][1] + r[2][2];
    let (qa, qb, qc, qd);
    if trace > 0.0 {
        let s = (trace + 1.0).sqrt() * 2.0;
        qa = 0.25 * s;
        qb = (r[2][1] - r[1][2]) / s;
        qc = (r[0][2] - r[2][0]) / s;
        qd = (r[1][0] - r[0][1]) / s;
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
        qa = (r[2][1] - r[1][2]) / s;
        qb = 0.25 * s;
        qc = (r[0][1] + r[1][0]) / s;
        qd = (r[0][2] + r[2][0]) / s;
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
        qa = (r[0][2] - r[2][0]) / s;
        qb = (r[0][1] + r[1][0]) / s;
        qc = 0.25 * s;
        qd = (r[1][2] + r[2][1]) / s;
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
        qa = (r[1][0] - r[0][1]) / s;
        qb = (r[0][2] + r[2][0]) / s;
        qc = (r[1][2] + r[2][1]) / s;
        qd = 0.25 * s;
    }
    // NIfTI requires a ≥ 0.
    let sign = if qa < 0.0 { -1.0 } else { 1.0 };
    ([qb * sign, qc * sign, qd * sign], [a[0][3], a[1][3], a[2][3]], qfac)
}

fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), NiftiError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => NiftiError::Truncated("the header is cut short".into()),
        _ => NiftiError::Io(e),
    })
}

struct Fields<'a> {
    b: &'a [u8],
    endian: Endian,
}

macro_rules! field {
    ($name:ident, $t:ty) => {
        fn $name(&self, at: usize) -> $t {
            let bytes = self.b[at..at + size_of::<$t>()].try_into().unwrap();
            match self.endian {
                Endian::Little => <$t>::from_le_bytes(bytes),
                Endian::Big => <$t>::from_be_bytes(bytes),
            }
        }
    };
}

impl Fields<'_> {
    field!(i16, i16);
    field!(i32, i32);
    field!(i64, i64);
    field!(f64, f64);
}

struct Writer(Vec<u8>);

macro_rules! put {
    ($name:ident, $t:ty) => {
        fn $name(&mut self, at: usize, v: $t) {
            self.0[at..at + size_of::<$t>()].copy_from_slice(&v.to_le_bytes());
        }
    };
}

impl Writer {
    put!(i16, i16);
    put!(i32, i32);
    put!(i64, i64);
    put!(f32, f32);
    put!(f64, f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        let affine = [[-0.75, 0.0, 0.0, 100.0], [0.0, -0.75, 0.0, 50.0], [0.0, 0.0, 2.5, -30.0]];
        Header::new_3d([64, 48, 20], [0.75, 0.75, 2.5], affine, DataType::I16)
    }

    #[test]
    fn nifti1_bytes_round_trip_through_the_nifti_crate() {
        let h = sample();
        let bytes = h.to_bytes();
        assert_eq!(bytes.len(), NIFTI1_HEADER_SIZE);
        let back = Header::parse(&bytes[..]).unwrap();
        assert_eq!(back.shape(), [64, 48, 20]);
        assert_eq!(back.datatype, DataType::I16);
        assert_eq!(back.affine(), h.affine());
    }

    #[test]
    fn nifti2_bytes_round_trip() {
        let mut h = sample();
        h.version = Version::Nifti2;
        let bytes = h.to_bytes();
        assert_eq!(bytes.len(), NIFTI2_HEADER_SIZE);
        let back = Header::parse(&bytes[..]).unwrap();
        assert_eq!(back.version, Version::Nifti2);
        assert_eq!(back.affine(), h.affine());
        assert_eq!(back.shape(), h.shape());
    }

    #[test]
    fn qform_of_an_lps_affine_matches_its_sform() {
        let mut h = sample();
        h.sform_code = 0;
        let q = h.affine();
        for (r, row) in h.srow.iter().enumerate() {
            for c in 0..4 {
                assert!((q[r][c] - row[c]).abs() < 1e-12, "{q:?} vs {:?}", h.srow);
            }
        }
    }

    #[test]
    fn absurd_dimensions_are_refused_before_allocation() {
        let mut h = sample();
        h.dim[1] = 32767;
        h.dim[2] = 32767;
        h.dim[3] = 32767;
        let err = Header::parse(&h.to_bytes()[..]).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        h.dim[3] = -5;
        assert!(Header::parse(&h.to_bytes()[..]).is_err());
    }

    #[test]
    fn garbage_is_not_nifti() {
        let err = Header::parse(&b"GIF89a this is not a nifti file at all"[..]).unwrap_err();
        assert!(matches!(err, NiftiError::NotNifti(_)), "{err}");
        let err = Header::parse(&[0x5c, 0x01, 0, 0, 1, 2][..]).unwrap_err();
        assert!(matches!(err, NiftiError::Header(_) | NiftiError::Truncated(_)), "{err}");
    }

    #[test]
    fn slope_zero_or_nan_means_no_scaling() {
        let mut h = sample();
        for s in [0.0, f64::NAN, f64::INFINITY] {
            h.scl_slope = s;
            h.scl_inter = 7.0;
            assert_eq!(h.scaling(), None);
        }
        h.scl_slope = 2.0;
        assert_eq!(h.scaling(), Some((2.0, 7.0)));
    }
}
