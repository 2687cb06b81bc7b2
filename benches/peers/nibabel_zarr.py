"""Peer for conversion: what a user writes today with nibabel + zarr-python.

usage: nibabel_zarr.py CT.nii.gz OUT.zarr [CHUNK_DEPTH]
Loads the volume through `img.dataobj` (nibabel's array proxy: raw values, then scaling),
writes a Zarr v3 array (z, y, x) with zstd level 3 and chunks (CHUNK_DEPTH, ny, nx).
"""
import sys

import nibabel as nib
import numpy as np
import zarr
from zarr.codecs import ZstdCodec

src, dst = sys.argv[1], sys.argv[2]
depth = int(sys.argv[3]) if len(sys.argv) > 3 else 32
img = nib.load(src)
data = np.asanyarray(img.dataobj)  # applies scl_slope/inter as nibabel does
data = np.ascontiguousarray(data.transpose(2, 1, 0))
nz, ny, nx = data.shape
arr = zarr.create_array(
    store=dst, shape=data.shape, dtype=data.dtype, chunks=(depth, ny, nx),
    compressors=ZstdCodec(level=3), dimension_names=("z", "y", "x"), overwrite=True,
)
arr[:] = data
