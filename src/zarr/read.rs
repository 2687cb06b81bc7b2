//! Reading a case's images back, chunk by chunk (the review exports and the report's cards).
//!
//! Invariants: nothing here reads more than one chunk of one array per call, into a buffer the
//! caller keeps, so callers hold as many chunks as they ask for and memory never depends on a
//! volume's length; a missing array is an error that names its path within the group.

use std::path::Path;
use std::sync::Arc;

use unsafe_cell_slice::UnsafeCellSlice;
use zarrs::array::{Array, ArrayBytesFixedDisjointView, ArraySubset};
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
/// last chunk is padded to the whole depth), decoded into `into`'s allocation; an array whose
/// element type is not `dt` is an error. zarrs' `retrieve_chunk` copied each decoded chunk into
/// a new `Vec`, jemalloc's decay returned some of them to the OS between chunks, and each was
/// faulted in again (review's export of one 768-slice case: 78 % of its 8.3 M page faults). A
/// loop that keeps `into` saves that copy's block; zarrs still allocates the encoded bytes and
/// the decompressed ones (or a fill-value chunk, for a chunk never written).
pub fn chunk_into(a: &ZArray, dt: DataType, i: u64, n: usize, into: &mut Voxels) -> Result<(), String> {
    let at = [i, 0, 0];
    let err = |e: &dyn std::fmt::Display| format!("chunk {i}: {e}");
    let subset = a.chunk_subset(&at).map_err(|e| err(&e))?;
    let shape = subset.shape().to_vec();
    if into.datatype() != dt {
        *into = Voxels::empty(dt);
    }
    // As `retrieve_chunk::<Vec<T>>` checked: the bytes are read as `dt`'s elements below.
    with_voxels!(&*into, v => element_type_is(v, a.data_type())).map_err(|e| err(&e))?;
    // Only the first chunk, and the one after a short last chunk, grow the buffer.
    let bytes = into.fill_bytes(subset.num_elements_usize());
    // SAFETY: the one view of `bytes`, which stays borrowed until the chunk is decoded.
    let mut view = unsafe {
        ArrayBytesFixedDisjointView::new(
            UnsafeCellSlice::new(bytes),
            dt.size(),
            &shape,
            ArraySubset::new_with_shape(shape.clone()),
        )
    }
    .map_err(|e| err(&e))?;
    a.retrieve_array_subset_into(&subset, (&mut view).into()).map_err(|e| err(&e))?;
    with_voxels!(into, v => v.truncate(n));
    Ok(())
}

/// The depth of an image array's chunks (slices per chunk).
pub fn chunk_depth(a: &ZArray) -> Result<usize, String> {
    let shape = a.chunk_shape(&[0, 0, 0]).map_err(|e| e.to_string())?;
    Ok(shape[0].get() as usize)
}

/// Whether an array of `data_type` holds elements of type `T` (the check zarrs makes when it
/// decodes into a `Vec<T>`).
fn element_type_is<T: zarrs::array::Element>(
    _: &[T],
    data_type: &zarrs::array::DataType,
) -> Result<(), zarrs::array::ElementError> {
    T::validate_data_type(data_type)
}
