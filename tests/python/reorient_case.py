"""Rewrites every NIfTI file of one case with its voxels stored in another order — the same
anatomy, another affine — as nibabel's `as_reoriented` does (data and affine together).

usage: reorient_case.py CASE_DIR flipz|swapxy
  flipz:  slices stored from the other end (the affine's third column negated);
  swapxy: the first two voxel axes exchanged (rows become columns).
"""
import os
import sys

import nibabel as nib
import numpy as np

case_dir, kind = sys.argv[1], sys.argv[2]
ornt = {"flipz": [[0, 1], [1, 1], [2, -1]], "swapxy": [[1, 1], [0, 1], [2, 1]]}[kind]
count = 0
for top, _, files in os.walk(case_dir):
    for f in files:
        if not f.endswith((".nii", ".nii.gz")):
            continue
        path = os.path.join(top, f)
        img = nib.load(path)
        dtype = img.get_data_dtype()
        data = np.asarray(img.dataobj).astype(dtype) if img.dataobj.slope == 1 and img.dataobj.inter == 0 else None
        if data is None:
            sys.exit(f"{path}: scaled data is not handled here")
        out = nib.Nifti1Image(data, img.affine, img.header).as_reoriented(np.array(ornt))
        out.set_data_dtype(dtype)
        out.header.set_sform(out.affine, code=1)
        out.header.set_qform(out.affine, code=1)
        nib.save(out, path)
        count += 1
print(f"OK {count} files reoriented ({kind})")
