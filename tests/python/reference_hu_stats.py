"""Checks examples/hu_stats.rs's table against numpy: per case and class, the CT's HU
(nibabel's get_fdata) inside the consensus mask (mean p over the models > 0.5) — voxels, mean,
population standard deviation (numpy's std), min and max.

usage: reference_hu_stats.py CORPUS HU_STATS_CSV
"""
import csv
import os
import sys

import nibabel as nib
import numpy as np

from common import CLASSES, MODELS, fail, find, probs

corpus, table = sys.argv[1], sys.argv[2]
rows = {(r["case_id"], r["class"]): r for r in csv.DictReader(open(table))}
cases = sorted(d for d in os.listdir(corpus) if os.path.isdir(os.path.join(corpus, d)))
checked = 0
for case in cases:
    ct = nib.load(find(os.path.join(corpus, case, "ct.nii.gz"))).get_fdata()
    for cls in CLASSES:
        p = [probs(find(os.path.join(corpus, case, "predictions", m, cls + ".nii.gz"))) for m in MODELS]
        mask = np.mean(p, axis=0) > 0.5
        r = rows.get((case, cls)) or fail(f"{case} {cls}: no row")
        if int(r["voxels"]) != int(mask.sum()):
            fail(f"{case} {cls}: voxels {r['voxels']} != {mask.sum()}")
        if mask.sum() == 0:
            if any(r[k] for k in ("mean_hu", "std_hu", "min_hu", "max_hu")):
                fail(f"{case} {cls}: statistics of an empty mask")
            continue
        v = ct[mask]
        for key, want in (("mean_hu", v.mean()), ("std_hu", v.std()), ("min_hu", v.min()), ("max_hu", v.max())):
            got = float(r[key])
            if not np.isclose(got, want, rtol=1e-9, atol=1e-9):
                fail(f"{case} {cls} {key}: {got} != numpy {want}")
        checked += 1
if checked == 0:
    fail("no class had a consensus mask")
print(f"hu_stats.csv matches numpy for {checked} (case, class) pairs")
