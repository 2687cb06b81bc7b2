//! [`VolumeWriter`]: writes a 3-D NIfTI-1 file slice by slice, `.nii` or `.nii.gz` by name.
//!
//! Used by `synth` (corpora of any size without holding a volume) and by exports. Always
//! little-endian with the data at byte 352.
//!
//! Invariant: the file appears at its path only whole and durable — it is written to a hidden
//! temp file beside it (`files::durable::temp_path`), fsynced and renamed by
//! [`VolumeWriter::finish`]; a writer dropped unfinished removes its temp file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::{Header, NiftiError, Version};

enum Sink {
    Plain(BufWriter<File>),
    Gzip(Box<GzEncoder<BufWriter<File>>>),
}

pub struct VolumeWriter {
    path: PathBuf,
    tmp: PathBuf,
    sink: Option<Sink>,
    slice_bytes: usize,
    slices_left: usize,
}

impl VolumeWriter {
    /// The bytes before the voxel data of a file this writer makes for `header`: a
    /// little-endian NIfTI-1 header with the data at byte 352, and no extensions.
    pub fn header_bytes(header: &Header) -> Vec<u8> {
        let mut h = header.clone();
        h.version = Version::Nifti1;
        h.vox_offset = 352;
        let mut bytes = h.to_bytes();
        bytes.extend_from_slice(&[0, 0, 0, 0]); // no extensions
        bytes
    }

    pub fn create(path: &Path, header: &Header, level: u32) -> Result<VolumeWriter, NiftiError> {
        let mut h = header.clone();
        h.version = Version::Nifti1;
        h.vox_offset = 352;
        let tmp = crate::files::durable::temp_path(path);
        let file = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(|e| NiftiError::Io(e).at(path))?);
        let mut sink = if path.extension().is_some_and(|e| e == "gz") {
            Sink::Gzip(Box::new(GzEncoder::new(file, Compression::new(level))))
        } else {
            Sink::Plain(file)
        };
        write(&mut sink, &Self::header_bytes(header)).map_err(|e| e.at(path))?;
        Ok(VolumeWriter {
            path: path.to_owned(),
            tmp,
            sink: Some(sink),
            slice_bytes: h.slice_bytes(),
            slices_left: h.shape()[2],
        })
    }

    /// Appends one z-slice of little-endian bytes (`nx * ny * size`).
    pub fn write_slice(&mut self, bytes: &[u8]) -> Result<(), NiftiError> {
        assert_eq!(bytes.len(), self.slice_bytes, "slice of the wrong size");
        assert!(self.slices_left > 0, "more slices than the header says");
        self.slices_left -= 1;
        write(self.sink.as_mut().expect("not finished"), bytes).map_err(|e| e.at(&self.path))
    }

    /// Completes the file: flushed, fsynced, then renamed into place (and the rename made
    /// durable).
    pub fn finish(mut self) -> Result<(), NiftiError> {
        assert_eq!(self.slices_left, 0, "{}: fewer slices than the header says", self.path.display());
        let file = match self.sink.take().expect("finished once") {
            Sink::Plain(f) => f.into_inner().map_err(|e| e.into_error()),
            Sink::Gzip(g) => g.finish().and_then(|f| f.into_inner().map_err(|e| e.into_error())),
        };
        let published = file
            .and_then(|f| f.sync_all())
            .and_then(|_| std::fs::rename(&self.tmp, &self.path))
            .and_then(|_| crate::files::durable::sync_parent(&self.path));
        published.map_err(|e| NiftiError::Io(e).at(&self.path))
    }
}

impl Drop for VolumeWriter {
    fn drop(&mut self) {
        if self.sink.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn write(sink: &mut Sink, bytes: &[u8]) -> Result<(), NiftiError> {
    match sink {
        Sink::Plain(f) => f.write_all(bytes)?,
        Sink::Gzip(g) => g.write_all(bytes)?,
    }
    Ok(())
}
