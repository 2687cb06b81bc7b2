//! Reading NIfTI volumes slab by slab.
//!
//! `header` parses and validates NIfTI-1/2 headers; `reader` streams the voxel data of a `.nii`
//! (memory-mapped) or `.nii.gz` (streamed, multi-member gzip too) file in z-slabs;
//! `voxels` turns raw file bytes into typed, scaled values; `writer` writes NIfTI files slice
//! by slice (for `synth` and exports).
//!
//! Invariant: no buffer is sized from a header before [`Header::parse`] has validated it, and a
//! reader never holds more than one slab of decoded data.

mod header;
mod reader;
mod voxels;
mod writer;

use std::path::PathBuf;

pub use header::{Endian, Header, MAX_AXIS, MAX_VOXELS, Version};
pub use reader::VolumeReader;
pub use voxels::{DataType, Voxels};
pub use writer::VolumeWriter;

/// What can go wrong reading a NIfTI file. [`NiftiError::at`] attaches the path.
#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    #[error("not a NIfTI file: {0}")]
    NotNifti(String),
    #[error("invalid NIfTI header: {0}")]
    Header(String),
    #[error("unsupported NIfTI file: {0}")]
    Unsupported(String),
    #[error("truncated file: {0}")]
    Truncated(String),
    #[error("corrupt gzip data: {0}")]
    Gzip(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{path}: {source}")]
    At {
        path: PathBuf,
        #[source]
        source: Box<NiftiError>,
    },
}

impl NiftiError {
    /// Names the file in the message (once).
    pub fn at(self, path: impl Into<PathBuf>) -> NiftiError {
        let path = path.into();
        match self {
            e @ NiftiError::At { .. } => e,
            // An object's I/O error names its URL already.
            NiftiError::Io(e) if e.to_string().starts_with(&*path.to_string_lossy()) => NiftiError::Io(e),
            e => NiftiError::At { path, source: Box::new(e) },
        }
    }
}
