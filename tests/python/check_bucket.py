"""Reads a slabflow output in a bucket with the Python tools users open it with.

usage: check_bucket.py ENDPOINT S3_URL CORPUS
(credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)

For every case CORPUS/<case>/ with a ct.nii[.gz] and its group S3_URL/cases/<case>.zarr, read
through s3fs (fsspec):
- zarr-python opens the group and every image's array `0` named in it, and `ct/0` equals
  nibabel's get_fdata() of the input in (z, y, x);
- nifti-zarr's `zarr2nii` of the group's `ct` gives that data, the input's affine and shape;
- every predictions/<model>/<class> array equals the file's stored values.
Exits non-zero naming the first mismatch.
"""
import glob
import os
import sys

import nibabel as nib
import numpy as np
import zarr
from niizarr import zarr2nii

endpoint, url, corpus = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
opts = {
    "endpoint_url": endpoint,
    "key": os.environ["AWS_ACCESS_KEY_ID"],
    "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
    "client_kwargs": {"region_name": "us-east-1"},
}
checks = 0


def fail(msg):
    print("MISMATCH:", msg)
    sys.exit(1)


def stored(src):
    a = np.asarray(nib.load(src).dataobj.get_unscaled())
    while a.ndim > 3:
        a = a[..., 0]
    return a


for case_dir in sorted(glob.glob(os.path.join(corpus, "*"))):
    case = os.path.basename(case_dir)
    cts = glob.glob(os.path.join(case_dir, "ct.nii*"))
    if not cts:
        continue
    group_url = f"{url}/cases/{case}.zarr"
    g = zarr.open_group(group_url, mode="r", storage_options=opts)
    if g.attrs["slabflow"]["case_id"] != case:
        fail(f"{group_url}: attributes {dict(g.attrs)}")
    ref = nib.load(cts[0])
    want = ref.get_fdata()
    ct = zarr.open_group(f"{group_url}/ct", mode="r", storage_options=opts)
    img = zarr2nii(ct)
    got = np.asarray(img.dataobj).astype(np.float64)
    if got.shape != want.shape or not np.array_equal(got, want):
        fail(f"{group_url}/ct: zarr2nii data differs from nibabel get_fdata of {cts[0]}")
    if not np.allclose(img.header.get_best_affine(), ref.header.get_best_affine(), atol=1e-5):
        fail(f"{group_url}/ct: affine differs")
    arr = zarr.open_array(f"{group_url}/ct/0", mode="r", storage_options=opts)
    if not np.array_equal(arr[:].astype(np.float64), want.transpose(2, 1, 0)):
        fail(f"{group_url}/ct/0: zarr-python read differs from get_fdata transposed")
    checks += 1
    for src in sorted(glob.glob(os.path.join(case_dir, "predictions", "*", "*.nii*"))):
        model = os.path.basename(os.path.dirname(src))
        cls = os.path.basename(src).split(".")[0]
        a = zarr.open_array(f"{group_url}/predictions/{model}/{cls}/0", mode="r", storage_options=opts)
        if not np.array_equal(a[:], stored(src).transpose(2, 1, 0)):
            fail(f"{group_url}/predictions/{model}/{cls}/0 differs from {src}")
        checks += 1

if checks == 0:
    fail("nothing checked")
print(f"OK {checks} arrays read from {url} with zarr-python and nifti-zarr through s3fs")
