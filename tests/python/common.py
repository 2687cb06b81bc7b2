"""What the reference scripts share: the synthetic corpus's models and classes, and reading
volumes with nibabel as the contract defines them. Run the scripts from any directory: Python
puts this folder on the path."""
import os
import sys

import nibabel as nib
import numpy as np

MODELS = ["swin_unetr", "nnunet", "unet"]
CLASSES = ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava", "pancreas"]


def fail(msg):
    """Reports the first mismatch and exits non-zero (the Rust test shows the output)."""
    print("MISMATCH:", msg)
    sys.exit(1)


def find(path):
    """`path`, or the same path without `.gz` (templates ending in .nii.gz also match .nii)."""
    for p in (path, path[:-3]):
        if os.path.exists(p):
            return p
    return None


def probs(path):
    """p as the contract defines it: the scaled value where the file has scaling, else an
    integer over its type's maximum (uint8 = p x 255), else the float value."""
    img = nib.load(path)
    slope, inter = img.header.get_slope_inter()
    raw = np.asanyarray(img.dataobj.get_unscaled())
    scaled = slope is not None and not np.isnan(slope) and slope != 0 and not (slope == 1 and (inter or 0) == 0)
    if scaled:
        return img.get_fdata()
    if np.issubdtype(raw.dtype, np.integer):
        return raw.astype(np.float64) / np.iinfo(raw.dtype).max
    return raw.astype(np.float64)
