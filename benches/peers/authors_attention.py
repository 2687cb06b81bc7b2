"""Peer for attention: the authors' way (github MrGiovanni/AbdomenAtlas create_attention.py):
nibabel get_fdata() in float64 and numpy, one class at a time, here with the paper's
definitions (Eq. 1-4) so the numbers can be compared with slabflow's metrics.csv.

usage: authors_attention.py CASE_DIR [METRICS_CSV [REPORT]]
CASE_DIR has predictions/<model>/<class>.nii.gz (uint8 = p x 255). Prints (or writes to
REPORT) the case's attention size (sum over classes) and, given slabflow's metrics.csv, the
largest relative difference of the per-class attention sums.
"""
import csv
import os
import sys

import nibabel as nib
import numpy as np
from scipy import special

MODELS = ["swin_unetr", "nnunet", "unet"]
CLASSES = ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava", "pancreas"]
case_dir = sys.argv[1]


def load(model, cls):
    return nib.load(os.path.join(case_dir, "predictions", model, cls + ".nii.gz")).get_fdata() / 255


sums = {}
for c in CLASSES:
    consistency_map = np.stack([load(m, c) for m in MODELS])  # as create_attention.py: float64
    std = np.std(consistency_map, axis=0)
    entropy = special.entr(consistency_map).mean(axis=0)
    overlap = np.zeros(std.shape, bool)
    for n, m in enumerate(MODELS):
        mine = consistency_map[n] > 0.5
        for other in CLASSES:
            if other != c:
                overlap |= mine & (load(m, other) > 0.5)
    attention = std + entropy + overlap
    sums[c] = float(attention.sum())
size = sum(sums.values())
report = [f"authors' way: attention size {size!r}"]
if len(sys.argv) > 2:
    case = os.path.basename(os.path.normpath(case_dir))
    rows = {r["class"]: r for r in csv.DictReader(open(sys.argv[2])) if r["case_id"] == case}
    worst = max(abs(float(rows[c]["attention_sum"]) - sums[c]) / max(abs(sums[c]), 1e-300) for c in CLASSES)
    report.append(f"largest relative difference of a class's attention_sum from slabflow's: {worst:.3g}")
out = open(sys.argv[3], "w") if len(sys.argv) > 3 else sys.stdout
print("\n".join(report), file=out)
