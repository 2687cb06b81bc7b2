//! NIfTI datatypes and typed voxel buffers.
//!
//! Raw slab bytes are decoded (byte-swapped where the file is big-endian) into a [`Voxels`]
//! buffer of the file's own type; scaling to physical values happens on demand, in f64, exactly
//! as nibabel's `get_fdata` does (`raw * slope + inter` with the header's slope and intercept).

use super::{Endian, NiftiError};

/// The NIfTI datatypes slabflow reads. Codes from `nifti1.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    F32,
    F64,
}

impl DataType {
    pub fn from_code(code: i32) -> Result<DataType, NiftiError> {
        Ok(match code {
            2 => DataType::U8,
            256 => DataType::I8,
            4 => DataType::I16,
            512 => DataType::U16,
            8 => DataType::I32,
            768 => DataType::U32,
            1024 => DataType::I64,
            16 => DataType::F32,
            64 => DataType::F64,
            other => {
                let name = match other {
                    0 => "unknown (0)",
                    1 => "binary",
                    32 => "complex64",
                    128 => "rgb24",
                    1280 => "uint64",
                    1536 => "float128",
                    1792 => "complex128",
                    2048 => "complex256",
                    2304 => "rgba32",
                    _ => "not a NIfTI datatype",
                };
                return Err(NiftiError::Unsupported(format!(
                    "datatype code {other} ({name}); readable: uint8, int8, int16, uint16, int32, uint32, int64, float32, float64"
                )));
            }
        })
    }

    pub fn code(self) -> i32 {
        match self {
            DataType::U8 => 2,
            DataType::I8 => 256,
            DataType::I16 => 4,
            DataType::U16 => 512,
            DataType::I32 => 8,
            DataType::U32 => 768,
            DataType::I64 => 1024,
            DataType::F32 => 16,
            DataType::F64 => 64,
        }
    }

    pub fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::F64 => 8,
        }
    }

    pub fn is_integer(self) -> bool {
        !matches!(self, DataType::F32 | DataType::F64)
    }

    /// `(min, max)` of an integer type, as f64.
    pub fn range(self) -> (f64, f64) {
        match self {
            DataType::U8 => (0.0, u8::MAX as f64),
            DataType::I8 => (i8::MIN as f64, i8::MAX as f64),
            DataType::I16 => (i16::MIN as f64, i16::MAX as f64),
            DataType::U16 => (0.0, u16::MAX as f64),
            DataType::I32 => (i32::MIN as f64, i32::MAX as f64),
            DataType::U32 => (0.0, u32::MAX as f64),
            DataType::I64 => (i64::MIN as f64, i64::MAX as f64),
            DataType::F32 => (f32::MIN as f64, f32::MAX as f64),
            DataType::F64 => (f64::MIN, f64::MAX),
        }
    }

    /// The numpy name (`int16`…), for messages and metadata.
    pub fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::I16 => "int16",
            DataType::U16 => "uint16",
            DataType::I32 => "int32",
            DataType::U32 => "uint32",
            DataType::I64 => "int64",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }
}

/// A buffer of voxels in the file's own type, native byte order, x fastest.
#[derive(Debug, Clone, PartialEq)]
pub enum Voxels {
    U8(Vec<u8>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Runs `$body` with `$v` bound to the typed `Vec` inside a [`Voxels`].
#[macro_export]
macro_rules! with_voxels {
    ($voxels:expr, $v:ident => $body:expr) => {
        match $voxels {
            $crate::nifti::Voxels::U8($v) => $body,
            $crate::nifti::Voxels::I8($v) => $body,
            $crate::nifti::Voxels::I16($v) => $body,
            $crate::nifti::Voxels::U16($v) => $body,
            $crate::nifti::Voxels::I32($v) => $body,
            $crate::nifti::Voxels::U32($v) => $body,
            $crate::nifti::Voxels::I64($v) => $body,
            // One body serves every type: its `as f32` / `as f64` is a no-op in these arms.
            #[allow(clippy::unnecessary_cast)]
            $crate::nifti::Voxels::F32($v) => $body,
            #[allow(clippy::unnecessary_cast)]
            $crate::nifti::Voxels::F64($v) => $body,
        }
    };
}

/// A plain-old-data voxel type that can be decoded from file bytes and widened to f64.
pub trait Voxel: Copy + Default + Send + Sync + bytemuck::Pod + 'static {
    const SIZE: usize;
    fn from_bytes(b: &[u8], endian: Endian) -> Self;
    fn to_f64(self) -> f64;
    fn swap(self) -> Self;
}

macro_rules! voxel {
    ($t:ty, $x:ident => $swap:expr) => {
        impl Voxel for $t {
            const SIZE: usize = size_of::<$t>();
            #[inline(always)]
            fn from_bytes(b: &[u8], endian: Endian) -> Self {
                let a = b.try_into().unwrap();
                match endian {
                    Endian::Little => <$t>::from_le_bytes(a),
                    Endian::Big => <$t>::from_be_bytes(a),
                }
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn swap(self) -> Self {
                let $x = self;
                $swap
            }
        }
    };
}
voxel!(u8, x => x);
voxel!(i8, x => x);
voxel!(i16, x => x.swap_bytes());
voxel!(u16, x => x.swap_bytes());
voxel!(i32, x => x.swap_bytes());
voxel!(u32, x => x.swap_bytes());
voxel!(i64, x => x.swap_bytes());
voxel!(f32, x => f32::from_bits(x.to_bits().swap_bytes()));
voxel!(f64, x => f64::from_bits(x.to_bits().swap_bytes()));

fn decode<T: Voxel>(raw: &[u8], endian: Endian, out: &mut Vec<T>) {
    out.clear();
    out.extend(raw.chunks_exact(T::SIZE).map(|b| T::from_bytes(b, endian)));
}

impl Voxels {
    pub fn empty(datatype: DataType) -> Voxels {
        match datatype {
            DataType::U8 => Voxels::U8(Vec::new()),
            DataType::I8 => Voxels::I8(Vec::new()),
            DataType::I16 => Voxels::I16(Vec::new()),
            DataType::U16 => Voxels::U16(Vec::new()),
            DataType::I32 => Voxels::I32(Vec::new()),
            DataType::U32 => Voxels::U32(Vec::new()),
            DataType::I64 => Voxels::I64(Vec::new()),
            DataType::F32 => Voxels::F32(Vec::new()),
            DataType::F64 => Voxels::F64(Vec::new()),
        }
    }

    pub fn datatype(&self) -> DataType {
        match self {
            Voxels::U8(_) => DataType::U8,
            Voxels::I8(_) => DataType::I8,
            Voxels::I16(_) => DataType::I16,
            Voxels::U16(_) => DataType::U16,
            Voxels::I32(_) => DataType::I32,
            Voxels::U32(_) => DataType::U32,
            Voxels::I64(_) => DataType::I64,
            Voxels::F32(_) => DataType::F32,
            Voxels::F64(_) => DataType::F64,
        }
    }

    pub fn len(&self) -> usize {
        with_voxels!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the contents with `raw` file bytes decoded in `endian`, reusing the allocation.
    pub fn decode_from(&mut self, raw: &[u8], endian: Endian) {
        with_voxels!(self, v => decode(raw, endian, v))
    }

    /// Resizes to `len` voxels and exposes them as bytes, to be filled straight from a stream
    /// in the machine's byte order (then [`Voxels::to_native`]): no intermediate raw buffer.
    pub fn fill_bytes(&mut self, len: usize) -> &mut [u8] {
        with_voxels!(self, v => {
            v.resize(len, Default::default());
            bytemuck::cast_slice_mut(v.as_mut_slice())
        })
    }

    /// Byte-swaps in place when the data came from a file of the other byte order.
    pub fn to_native(&mut self, endian: Endian) {
        let native = if cfg!(target_endian = "little") { Endian::Little } else { Endian::Big };
        if endian != native {
            with_voxels!(self, v => v.iter_mut().for_each(|x| *x = x.swap()))
        }
    }

    /// Writes the physical values (`raw * slope + inter` in f64 when `scaling` is set, as
    /// nibabel's `get_fdata`) into `out`, which must have `self.len()` elements.
    pub fn scaled_into(&self, scaling: Option<(f64, f64)>, out: &mut [f64]) {
        fn go<T: Voxel>(v: &[T], scaling: Option<(f64, f64)>, out: &mut [f64]) {
            match scaling {
                None => out.iter_mut().zip(v).for_each(|(o, &x)| *o = x.to_f64()),
                Some((s, i)) => out.iter_mut().zip(v).for_each(|(o, &x)| *o = x.to_f64() * s + i),
            }
        }
        with_voxels!(self, v => go(v, scaling, out))
    }

    /// Calls `f(index, value)` with each voxel's physical value (see [`Voxels::scaled_into`]).
    pub fn for_each_scaled(&self, scaling: Option<(f64, f64)>, mut f: impl FnMut(usize, f64)) {
        let (s, i) = scaling.unwrap_or((1.0, 0.0));
        let scaled = scaling.is_some();
        with_voxels!(self, v => {
            for (k, &x) in v.iter().enumerate() {
                let x = x.to_f64();
                f(k, if scaled { x * s + i } else { x });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_byte_orders() {
        let mut v = Voxels::empty(DataType::I16);
        v.decode_from(&[0x01, 0x02, 0xff, 0xfe], Endian::Little);
        assert_eq!(v, Voxels::I16(vec![0x0201, -257]));
        v.decode_from(&[0x01, 0x02, 0xff, 0xfe], Endian::Big);
        assert_eq!(v, Voxels::I16(vec![0x0102, -2]));
        let mut f = Voxels::empty(DataType::F64);
        f.decode_from(&1.5f64.to_be_bytes(), Endian::Big);
        assert_eq!(f, Voxels::F64(vec![1.5]));
    }

    #[test]
    fn scaling_matches_get_fdata_arithmetic() {
        let v = Voxels::U8(vec![0, 1, 255]);
        let mut out = [0.0; 3];
        v.scaled_into(Some((0.5, -1024.0)), &mut out);
        assert_eq!(out, [-1024.0, -1023.5, -896.5]);
    }

    #[test]
    fn unsupported_datatypes_are_named() {
        let err = DataType::from_code(128).unwrap_err().to_string();
        assert!(err.contains("rgb24"), "{err}");
    }
}
