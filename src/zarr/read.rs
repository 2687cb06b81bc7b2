//! Reading a case's images back, chunk by chunk (the review exports and the report's cards).
//!
//! Invariants: nothing here reads more than one chunk of one array per call, so callers hold
//! as many chunks as they ask for and memory never depends on a volume's length; a missing
//! array is an error that names its path within the group.

use std::path::Path;
use std::sync::Arc;

use zarrs::array::Array;
use zarrs::storage::ReadableStorageTraits;

use crate::nifti::{DataType, Header, Voxels};
use crate::with_voxels;

/// An array of a case group.
pub type ZArray = Array<dyn ReadableStorageTraits>;

/// A case's Zarr group, open for reading (disk or bucket: [`super::readable`]).
#[derive(Clone)]
pub struct CaseGroup {
    store: Arc<dyn ReadableStorageTraits>,
}

impl CaseGroup {
    pub fn open(dir: &Path) -> Result<CaseGroup, String> {
        Ok(CaseGroup { store: super::readable(dir)? })
    }

    /// The array at `path` within the group (e.g. `attention/liver/0`).
    pub fn array(&self, path: &str) -> Result<ZArray, String> {
        Array::open(self.store.clone(), &format!("/{path}")).map_err(|e| format!("{path}: {e}"))
    }

    /// The NIfTI header stored beside an image's array `0`.
    pub fn header(&self, image: &str) -> Result<Header, String> {
        let a = self.array(&format!("{image}/nifti"))?;
        let bytes: Vec<u8> = a.retrieve_chunk(&[0]).map_err(|e| format!("{image}/nifti: {e}"))?;
        Header::parse(&bytes[..]).map_err(|e| format!("{image}/nifti: {e}"))
    }
}

/// Chunk `i` of an image's array `0` (the slab of slices i·depth…), cut to `n` voxels (the
/// last chunk is padded to the whole depth).
pub fn chunk(a: &ZArray, dt: DataType, i: u64, n: usize) -> Result<Voxels, String> {
    let at = [i, 0, 0];
    let err = |e: zarrs::array::ArrayError| format!("chunk {i}: {e}");
    let mut v = match dt {
        DataType::U8 => Voxels::U8(a.retrieve_chunk(&at).map_err(err)?),
        DataType::I8 => Voxels::I8(a.retrieve_chunk(&at).map_err(err)?),
        DataType::I16 => Voxels::I16(a.retrieve_chunk(&at).map_err(err)?),
        DataType::U16 => Voxels::U16(a.retrieve_chunk(&at).map_err(err)?),
        DataType::I32 => Voxels::I32(a.retrieve_chunk(&at).map_err(err)?),
        DataType::U32 => Voxels::U32(a.retrieve_chunk(&at).map_err(err)?),
        DataType::I64 => Voxels::I64(a.retrieve_chunk(&at).map_err(err)?),
        DataType::F32 => Voxels::F32(a.retrieve_chunk(&at).map_err(err)?),
        DataType::F64 => Voxels::F64(a.retrieve_chunk(&at).map_err(err)?),
    };
    with_voxels!(&mut v, d => d.truncate(n));
    Ok(v)
}

/// The depth of an image array's chunks (slices per chunk).
pub fn chunk_depth(a: &ZArray) -> Result<usize, String> {
    let shape = a.chunk_shape(&[0, 0, 0]).map_err(|e| e.to_string())?;
    Ok(shape[0].get() as usize)
}
