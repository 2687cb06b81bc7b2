"""Peer for the metrics stage: DeepMind surface-distance NSD and numpy Dice for every labelled
class of one case, the usual way (nibabel get_fdata, whole volumes).

usage: deepmind_nsd.py CASE_DIR [TOLERANCE_MM]
Prints one line per class: class, dice, nsd.
"""
import os
import sys

import numpy as np

np.Inf = np.inf  # surface-distance 0.1 predates numpy 2
import nibabel as nib  # noqa: E402
from surface_distance import compute_surface_dice_at_tolerance, compute_surface_distances  # noqa: E402

case_dir = sys.argv[1]
tol = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
models = sorted(os.listdir(os.path.join(case_dir, "predictions")))
for f in sorted(os.listdir(os.path.join(case_dir, "segmentations"))):
    cls = f[: -len(".nii.gz")]
    g_img = nib.load(os.path.join(case_dir, "segmentations", f))
    g = g_img.get_fdata() > 0
    p = np.mean([nib.load(os.path.join(case_dir, "predictions", m, f)).get_fdata() / 255 for m in models], axis=0) > 0.5
    spacing = [float(s) for s in g_img.header.get_zooms()[:3]]
    dice = 2 * (g & p).sum() / (g.sum() + p.sum())
    nsd = compute_surface_dice_at_tolerance(compute_surface_distances(g, p, spacing), tol)
    print(cls, dice, nsd)
