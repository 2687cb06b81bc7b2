//! Writing cases as Zarr v3 groups of NIfTI-Zarr images (zarrs).
//!
//! Layout of one case (`cases/<case_id>.zarr/`): a root group, intermediate groups
//! (`predictions/<model>/…`), and one image group per volume holding
//! - attributes `{"ome": {"version": "0.5", "multiscales": [...]}}` with axes z, y, x in mm,
//! - array `0`, shape `[nz, ny, nx]`, chunks `[slab_depth, ny, nx]` ([`Codec`]), `dimension_names`
//!   `["z","y","x"]`,
//! - array `nifti`, the binary NIfTI header (348 or 540 bytes, uint8, one uncompressed chunk).
//!
//! Invariants: slabs are written as whole chunks (the last one padded with the fill value), so
//! no chunk is ever read back or touched by two writers; chunks equal to the fill value are not
//! stored (zarrs' default), so air and empty predictions cost nothing on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use zarrs::array::CodecOptions;
use zarrs::array::codec::{BloscCodec, BloscCompressionLevel, BloscCompressor, BloscShuffleMode, ZstdCodec};
use zarrs::array::{Array, ArrayBuilder, BytesToBytesCodecTraits, Element, data_type};
use zarrs::group::GroupBuilder;

use crate::nifti::{DataType, Header};

pub mod read;
mod store;
pub use store::{OutStore, SlabStore, readable};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {message}")]
    Zarr { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The chunk codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Blosc with byte shuffle and zstd inside: the element bytes are regrouped (all high bytes,
    /// then all low bytes) before zstd, which makes CT int16 both smaller and much faster to
    /// compress than plain zstd (measured in benches/README.md). nii2zarr's default is blosc too.
    BloscZstd,
    /// Blosc with byte shuffle and LZ4: fastest, larger files.
    BloscLz4,
    /// Plain zstd.
    Zstd,
    /// No compression.
    None,
}

/// Blosc block size. Left to blosc, zstd blocks are small and zstd sets up its tables for each
/// one: on 512×512 slabs 1 MiB blocks compressed 1.5–2× faster, and smaller (benches/README.md).
const BLOSC_BLOCK: usize = 1 << 20;

impl Codec {
    /// The codecs a pipeline can name for every array (`output.codec`; "auto", the
    /// default, chooses per kind of array: [`ZarrOptions::per_kind`]).
    pub const NAMES: &[&str] = &["blosc-zstd", "blosc-lz4", "zstd", "none"];

    pub fn parse(s: &str) -> Option<Codec> {
        Some(match s {
            "blosc-zstd" => Codec::BloscZstd,
            "blosc-lz4" => Codec::BloscLz4,
            "zstd" => Codec::Zstd,
            "none" => Codec::None,
            _ => return None,
        })
    }

    /// The default level: zstd 3 for plain zstd; blosc's clevel otherwise (blosc maps clevel
    /// 1–9 onto its inner codec; for zstd, clevel 1 is zstd level 1, clevel 2 is level 3).
    /// blosc-zstd clevel 1 on 1 MiB blocks was measured fastest at nearly the same size
    /// (benches/README.md, "Chunk codec").
    pub fn default_level(self) -> i32 {
        match self {
            Codec::BloscZstd => 1,
            Codec::BloscLz4 => 5,
            Codec::Zstd => 3,
            Codec::None => 0,
        }
    }

    /// Valid levels.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Codec::BloscZstd | Codec::BloscLz4 => 1..=9,
            Codec::Zstd => -7..=22,
            Codec::None => 0..=0,
        }
    }

    fn bytes_to_bytes(self, level: i32, element_size: usize, shuffle: bool) -> Vec<Arc<dyn BytesToBytesCodecTraits>> {
        let blosc = |cname| -> Vec<Arc<dyn BytesToBytesCodecTraits>> {
            let shuffle =
                if element_size > 1 && shuffle { BloscShuffleMode::Shuffle } else { BloscShuffleMode::NoShuffle };
            let clevel = BloscCompressionLevel::try_from(level.clamp(0, 9) as u8).expect("level checked by the config");
            vec![Arc::new(
                BloscCodec::new(cname, clevel, Some(BLOSC_BLOCK), shuffle, Some(element_size))
                    .expect("valid blosc settings"),
            )]
        };
        match self {
            Codec::BloscZstd => blosc(BloscCompressor::Zstd),
            Codec::BloscLz4 => blosc(BloscCompressor::LZ4),
            Codec::Zstd => vec![Arc::new(ZstdCodec::new(level, false))],
            Codec::None => vec![],
        }
    }
}

/// How arrays are chunked and compressed.
#[derive(Debug, Clone)]
pub struct ZarrOptions {
    /// Chunk (or shard) depth in slices: one slab.
    pub slab_depth: usize,
    pub codec: Codec,
    /// Codec level (see [`Codec::levels`]).
    pub level: i32,
    /// Sub-chunk shape `[z, y, x]` inside each slab-sized shard (each extent reduced to a
    /// divisor of the shard's); `None` = no sharding.
    pub subchunks: Option<[u64; 3]>,
    /// Blosc's byte shuffle for elements wider than a byte. Off for sparse float maps
    /// (attention): measured on a full-size case's liver map, zstd on the unshuffled floats
    /// was both faster (2.0 against 1.3 GB/s) and smaller (ratio 0.066 against 0.085);
    /// on CT and the normalised CT the shuffle wins (benches/README.md, "Chunk codec").
    pub shuffle: bool,
    /// `codec = "auto"`: `codec` and `level` are the dense arrays' (CT, normalised CT), and
    /// [`ZarrOptions::sparse`] gives [`SPARSE_CODEC`] to the others.
    pub per_kind: bool,
}

/// What `codec = "auto"` gives the sparse arrays — predictions, label masks, attention maps,
/// mostly 0 with organs in them: on `floor.sh`'s full-size cases blosc-lz4 took 0.25 CPU s
/// less per case than blosc-zstd, for 19 MiB more per case (11 → 19 MiB of predictions and
/// labels, 18 → 29 MiB of attention; benches/README.md, "Chunk codec"). CT and the
/// normalised CT, dense, keep blosc-zstd with byte shuffle, 25–30 % smaller than lz4 would
/// make them.
pub const SPARSE_CODEC: Codec = Codec::BloscLz4;

impl ZarrOptions {
    /// One codec and level for every array.
    pub fn new(slab_depth: usize, codec: Codec, level: i32, subchunks: Option<[u64; 3]>) -> ZarrOptions {
        ZarrOptions { slab_depth, codec, level, subchunks, shuffle: true, per_kind: false }
    }

    /// The codec chosen per kind of array (`codec = "auto"`, the default): blosc-zstd for the
    /// dense arrays (at `level`, by default 1), [`SPARSE_CODEC`] for the sparse ones.
    pub fn per_kind(slab_depth: usize, level: Option<i32>, subchunks: Option<[u64; 3]>) -> ZarrOptions {
        let codec = Codec::BloscZstd;
        let level = level.unwrap_or(codec.default_level());
        ZarrOptions { per_kind: true, ..ZarrOptions::new(slab_depth, codec, level, subchunks) }
    }

    /// The options of a sparse array (predictions, masks, attention maps): [`SPARSE_CODEC`]
    /// at its default level, unshuffled, when the codec is chosen per kind; else the same.
    pub fn sparse(&self) -> ZarrOptions {
        match self.per_kind {
            true => {
                ZarrOptions { codec: SPARSE_CODEC, level: SPARSE_CODEC.default_level(), shuffle: false, ..self.clone() }
            }
            false => self.clone(),
        }
    }

    /// The same without blosc's byte shuffle (sparse float maps: see `shuffle`).
    pub fn unshuffled(&self) -> ZarrOptions {
        ZarrOptions { shuffle: false, ..self.clone() }
    }
}

/// One case's Zarr group, open for writing.
pub struct CaseStore {
    dir: PathBuf,
    store: Arc<OutStore>,
}

impl CaseStore {
    /// Creates the case group at `dir`, replacing what was there — unless `keep` (a case
    /// resumed from a slab checkpoint), when the chunks already written stay and the metadata
    /// is written again, identical.
    /// On a bucket output, `writes` carries the case's PUTs.
    pub fn create(
        dir: &Path,
        attributes: Map<String, Value>,
        keep: bool,
        writes: Option<&Arc<crate::files::mirror::Writes>>,
    ) -> Result<CaseStore, StoreError> {
        if !keep {
            crate::files::durable::remove_path(dir)
                .map_err(|source| StoreError::Io { path: dir.to_owned(), source })?;
        }
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_owned(), source })?;
        let store = Arc::new(OutStore::new(dir, !keep, writes));
        let cs = CaseStore { dir: dir.to_owned(), store };
        cs.group("/", attributes)?;
        Ok(cs)
    }

    /// The case group at `dir` as it is, to add or replace images in it (a case redone in
    /// part): nothing is rewritten but what is written through it. `fresh`: the images about
    /// to be written were removed first (no chunk of theirs is on disk), so an all-fill chunk
    /// needs no erase.
    pub fn open(
        dir: &Path,
        fresh: bool,
        writes: Option<&Arc<crate::files::mirror::Writes>>,
    ) -> Result<CaseStore, StoreError> {
        // Not `fresh` for this look: the group's own metadata is there from before.
        let there = OutStore::new(dir, false, writes)
            .has("zarr.json")
            .map_err(|source| StoreError::Io { path: dir.to_owned(), source })?;
        if !there {
            return Err(StoreError::Zarr { path: dir.to_owned(), message: "the case's Zarr group is missing".into() });
        }
        Ok(CaseStore { dir: dir.to_owned(), store: Arc::new(OutStore::new(dir, fresh, writes)) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn group(&self, path: &str, attributes: Map<String, Value>) -> Result<(), StoreError> {
        let group = GroupBuilder::new()
            .attributes(attributes)
            .build(self.store.clone(), path)
            .map_err(|e| zerr(&self.dir, e))?;
        group.store_metadata().map_err(|e| zerr(&self.dir, e))
    }

    /// Creates the NIfTI-Zarr image group `name` (e.g. `predictions/unet/liver`) for a volume
    /// on `header`'s grid whose array `0` holds `stored` values; `header` must already describe
    /// those stored values (type and scaling).
    pub fn image(
        &self,
        name: &str,
        header: &Header,
        stored: DataType,
        fill: f64,
        opts: &ZarrOptions,
    ) -> Result<ImageWriter, StoreError> {
        // Parent groups first (Zarr v3 has no implicit groups).
        let mut parent = String::new();
        for part in name.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            parent.push('/');
            parent.push_str(part);
            let there = self
                .store
                .has(&format!("{}/zarr.json", &parent[1..]))
                .map_err(|source| StoreError::Io { path: self.dir.clone(), source })?;
            if !there {
                self.group(&parent, Map::new())?;
            }
        }
        let [nx, ny, nz] = header.shape();
        let [dx, dy, dz] = header.spacing();
        let ome = json!({
            "version": "0.5",
            "multiscales": [{
                "name": name,
                "axes": [
                    {"name": "z", "type": "space", "unit": "millimeter"},
                    {"name": "y", "type": "space", "unit": "millimeter"},
                    {"name": "x", "type": "space", "unit": "millimeter"},
                ],
                "datasets": [{
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [dz, dy, dx]}],
                }],
            }],
        });
        let mut attrs = Map::new();
        attrs.insert("ome".into(), ome);
        let group_path = format!("/{name}");
        self.group(&group_path, attrs)?;

        let depth = opts.slab_depth.min(nz).max(1);
        let (dt, fillv) = zarr_type(stored, fill);
        let mut b = ArrayBuilder::new(
            vec![nz as u64, ny as u64, nx as u64],
            vec![depth as u64, ny as u64, nx as u64],
            dt,
            fillv,
        );
        b.bytes_to_bytes_codecs(opts.codec.bytes_to_bytes(opts.level, stored.size(), opts.shuffle));
        b.dimension_names(Some(["z", "y", "x"]));
        if let Some(sub) = opts.subchunks {
            // Sub-chunks must tile the shard (one slab): each extent becomes the largest
            // divisor of the shard's extent not above the one asked for.
            let fit = |want: u64, extent: usize| {
                (1..=want.min(extent as u64)).rev().find(|d| (extent as u64).is_multiple_of(*d)).unwrap_or(1)
            };
            b.subchunk_shape(Some(vec![fit(sub[0], depth), fit(sub[1], ny), fit(sub[2], nx)]));
        }
        let array = b.build(self.store.clone(), &format!("{group_path}/0")).map_err(|e| zerr(&self.dir, e))?;
        array.store_metadata().map_err(|e| zerr(&self.dir, e))?;

        let bytes = header.with_stored(stored, false).to_bytes();
        let mut hb = ArrayBuilder::new(vec![bytes.len() as u64], vec![bytes.len() as u64], data_type::uint8(), 0u8);
        hb.dimension_names(Some(["bytes"]));
        let harray = hb.build(self.store.clone(), &format!("{group_path}/nifti")).map_err(|e| zerr(&self.dir, e))?;
        harray.store_metadata().map_err(|e| zerr(&self.dir, e))?;
        harray.store_chunk(&[0], bytes).map_err(|e| zerr(&self.dir, e))?;

        Ok(ImageWriter { dir: self.dir.clone(), array, depth, shape: [nx, ny, nz], stored, fill })
    }
}

/// Array `0` of one image, written slab by slab.
pub struct ImageWriter {
    dir: PathBuf,
    array: Array<OutStore>,
    depth: usize,
    shape: [usize; 3],
    stored: DataType,
    fill: f64,
}

impl ImageWriter {
    pub fn slab_depth(&self) -> usize {
        self.depth
    }

    pub fn datatype(&self) -> DataType {
        self.stored
    }

    /// Writes the slab starting at slice `z0` as all fill value: no chunk (erased if one was
    /// there), nothing scanned or encoded.
    pub fn write_fill(&self, z0: usize) -> Result<(), StoreError> {
        assert_eq!(z0 % self.depth, 0, "slab does not start on a chunk boundary");
        self.array.erase_chunk(&[(z0 / self.depth) as u64, 0, 0]).map_err(|e| zerr(&self.dir, e))
    }

    /// Writes the slab starting at slice `z0` (a multiple of the slab depth). `data` holds
    /// `nz * ny * nx` values, `nz` = slab depth except for the last slab; the last chunk is
    /// padded with the fill value so every write is a whole chunk.
    pub fn write_slab<T: Element + FromF64 + bytemuck::Pod>(&self, z0: usize, data: &[T]) -> Result<(), StoreError> {
        let [nx, ny, nz] = self.shape;
        assert_eq!(z0 % self.depth, 0, "slab does not start on a chunk boundary");
        let slice = nx * ny;
        assert_eq!(data.len() % slice, 0);
        let chunk = [(z0 / self.depth) as u64, 0, 0];
        let full = self.depth * slice;
        assert!(data.len() == full || z0 + data.len() / slice == nz, "only the last slab may be short");
        // One vectorised scan decides whether the chunk is all fill value (zarrs' own check
        // goes element by element): then it is erased (no object), else stored unchecked.
        let fill = T::from_f64(self.fill);
        if all_equal(bytemuck::cast_slice(data), bytemuck::bytes_of(&fill)) {
            return self.array.erase_chunk(&chunk).map_err(|e| zerr(&self.dir, e));
        }
        let opts = CodecOptions::default().with_store_empty_chunks(true);
        let r = if data.len() == full {
            self.array.store_chunk_opt(&chunk, data, &opts)
        } else {
            let mut padded = Vec::with_capacity(full);
            padded.extend_from_slice(data);
            padded.resize(full, fill);
            // Lent, not given: zarrs copies a given Vec<T> of multi-byte elements into a new
            // Vec<u8> (their alignments differ), a second chunk-sized allocation and copy.
            self.array.store_chunk_opt(&chunk, &padded[..], &opts)
        };
        r.map_err(|e| zerr(&self.dir, e))
    }
}

/// Whether `bytes` is `value` (one element's bytes: 1, 2, 4 or 8 of them) repeated: compared a
/// u64 word at a time, 4 KiB per early exit, which the compiler vectorises.
pub fn all_equal(bytes: &[u8], value: &[u8]) -> bool {
    let n = value.len();
    // (A start not on an element boundary — an 8-byte element 4-aligned on a 32-bit target —
    // takes the plain comparison too.)
    if n == 0
        || !8usize.is_multiple_of(n)
        || !bytes.len().is_multiple_of(n)
        || !(bytes.as_ptr() as usize).is_multiple_of(n)
    {
        return bytes.chunks(n.max(1)).all(|c| c == value);
    }
    let (head, words, tail) = bytemuck::pod_align_to::<u8, u64>(bytes);
    // `head` ends where words begin: a multiple of the element size from an element-aligned
    // start, so the pattern's phase is the element's.
    let mut pattern = [0u8; 8];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = value[i % n];
    }
    let word = u64::from_ne_bytes(pattern);
    head.chunks(n).all(|c| c == value)
        && tail.chunks(n).all(|c| c == value)
        && words.chunks(512).all(|block| block.iter().fold(0u64, |a, &w| a | (w ^ word)) == 0)
}

/// Converts a fill value to an element type.
pub trait FromF64: Copy {
    fn from_f64(v: f64) -> Self;
}

macro_rules! from_f64 {
    ($($t:ty),*) => {$(impl FromF64 for $t { fn from_f64(v: f64) -> Self { v as $t } })*};
}
from_f64!(u8, i8, i16, u16, i32, u32, i64, f32, f64);

fn zarr_type(dt: DataType, fill: f64) -> (zarrs::array::DataType, zarrs::array::builder::ArrayBuilderFillValue) {
    match dt {
        DataType::U8 => (data_type::uint8(), (fill as u8).into()),
        DataType::I8 => (data_type::int8(), (fill as i8).into()),
        DataType::I16 => (data_type::int16(), (fill as i16).into()),
        DataType::U16 => (data_type::uint16(), (fill as u16).into()),
        DataType::I32 => (data_type::int32(), (fill as i32).into()),
        DataType::U32 => (data_type::uint32(), (fill as u32).into()),
        DataType::I64 => (data_type::int64(), (fill as i64).into()),
        DataType::F32 => (data_type::float32(), (fill as f32).into()),
        DataType::F64 => (data_type::float64(), fill.into()),
    }
}

fn zerr(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Zarr { path: path.to_owned(), message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::all_equal;

    #[test]
    fn all_equal_finds_one_other_element_anywhere_for_every_element_size() {
        let cases: [(&[u8], usize); 4] =
            [(&[0], 1), (&(-1024i16).to_ne_bytes(), 2), (&1.5f32.to_ne_bytes(), 4), (&(-2.0f64).to_ne_bytes(), 8)];
        for (value, n) in cases {
            for len in [0, 1, 3, 31, 32, 33, 300, 1000] {
                // Backed by u64s, so that every offset of a whole element can be tried.
                let mut words = vec![0u64; (len * n).div_ceil(8) + 2];
                for start in [0, n, 2 * n, 8] {
                    let bytes: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut words)[start..start + len * n];
                    for e in bytes.chunks_mut(n) {
                        e.copy_from_slice(value);
                    }
                    assert!(all_equal(bytes, value), "n {n} len {len} start {start}");
                    for at in 0..len {
                        bytes[at * n] ^= 0x40;
                        assert!(!all_equal(bytes, value), "n {n} len {len} start {start} at {at}");
                        bytes[at * n] ^= 0x40;
                    }
                }
            }
        }
    }
}
