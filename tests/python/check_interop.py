"""Checks slabflow's NIfTI-Zarr output with the Python tools users open it with.

usage: check_interop.py OUT CORPUS

For every case directory CORPUS/<case>/ with a ct.nii[.gz], and its group OUT/cases/<case>.zarr:
- `zarr2nii` (nifti-zarr) of `ct` gives nibabel's get_fdata() of the input, the input's
  affine (get_best_affine) and shape; zarr-python reads `ct/0` as get_fdata() in (z, y, x);
- the OME-Zarr 0.5 metadata has axes z, y, x in millimeter and scale = pixdim reversed;
- the `nifti` header says scl_slope 1, inter 0 for `ct`;
- every predictions/<model>/<class> and labels/<class> group gives back the file's stored
  values (zarr2nii returns them unscaled) and the file's scaling in its header.
Exits non-zero naming the first mismatch.
"""
import glob
import os
import sys

import nibabel as nib
import numpy as np
import zarr
from niizarr import zarr2nii

out, corpus = sys.argv[1], sys.argv[2]
checks = 0


def fail(msg):
    print("MISMATCH:", msg)
    sys.exit(1)


def check_group(group, src, scaled):
    global checks
    ref = nib.load(src)
    img = zarr2nii(group)
    got = np.asarray(img.dataobj)
    if scaled:
        want = ref.get_fdata()
        while want.ndim > 3:
            want = want[..., 0]
        if not np.array_equal(got.astype(np.float64), want):
            fail(f"{group}: zarr2nii data differs from nibabel get_fdata of {src}: max |d| = {np.nanmax(np.abs(got - want))}")
        slope, inter = img.header.get_slope_inter()
        if slope not in (None, 1.0) or inter not in (None, 0.0):
            fail(f"{group}: header slope/inter {slope}/{inter}, expected 1/0")
    else:
        want = np.asarray(ref.dataobj.get_unscaled())
        while want.ndim > 3:
            want = want[..., 0]
        if got.dtype != want.dtype.newbyteorder("=") or not np.array_equal(got, want):
            fail(f"{group}: stored values differ from {src} ({got.dtype} vs {want.dtype})")
        s0, i0 = ref.header.get_slope_inter()
        s1, i1 = img.header.get_slope_inter()
        if (s0, i0) != (s1, i1) and not (s0 is None and s1 in (None, 1.0)):
            fail(f"{group}: scaling {s1}/{i1} differs from the file's {s0}/{i0}")
    if not np.allclose(img.header.get_best_affine(), ref.header.get_best_affine(), atol=1e-5):
        fail(f"{group}: affine\n{img.header.get_best_affine()}\nvs {src}\n{ref.header.get_best_affine()}")
    arr = zarr.open_array(group + "/0", mode="r")
    if tuple(arr.metadata.dimension_names) != ("z", "y", "x"):
        fail(f"{group}/0: dimension_names {arr.metadata.dimension_names}")
    if not np.array_equal(arr[:].astype(np.float64), np.asarray(got, np.float64).transpose(2, 1, 0)):
        fail(f"{group}/0: zarr-python read differs from zarr2nii transposed")
    ms = zarr.open_group(group, mode="r").attrs["ome"]["multiscales"][0]
    axes = [(a["name"], a["type"], a.get("unit")) for a in ms["axes"]]
    if axes != [("z", "space", "millimeter"), ("y", "space", "millimeter"), ("x", "space", "millimeter")]:
        fail(f"{group}: OME axes {axes}")
    scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    zooms = ref.header.get_zooms()[:3]
    if not np.allclose(scale, zooms[::-1]):
        fail(f"{group}: OME scale {scale} vs pixdim reversed {zooms[::-1]}")
    checks += 1


for case_dir in sorted(glob.glob(os.path.join(corpus, "*"))):
    case = os.path.basename(case_dir)
    cts = glob.glob(os.path.join(case_dir, "ct.nii*"))
    if not cts:
        continue
    root = os.path.join(out, "cases", case + ".zarr")
    if not os.path.isdir(root):
        fail(f"{root} is missing")
    check_group(os.path.join(root, "ct"), cts[0], scaled=True)
    for p in sorted(glob.glob(os.path.join(case_dir, "predictions", "*", "*.nii*"))):
        model = os.path.basename(os.path.dirname(p))
        cls = os.path.basename(p).split(".nii")[0]
        check_group(os.path.join(root, "predictions", model, cls), p, scaled=False)
    for p in sorted(glob.glob(os.path.join(case_dir, "segmentations", "*.nii*"))):
        cls = os.path.basename(p).split(".nii")[0]
        check_group(os.path.join(root, "labels", cls), p, scaled=False)

print(f"OK {checks} volumes")
