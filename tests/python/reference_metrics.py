"""Checks slabflow's metrics.csv against DeepMind surface-distance (NSD) and numpy (Dice,
volumes, model agreement), computed from the corpus files read by nibabel.

usage: reference_metrics.py OUT CORPUS TOLERANCE_MM
NSD must agree within 1e-9, everything else within 1e-12 relative. Exits non-zero naming the
first mismatch.
"""
import csv
import glob
import math
import os
import sys

import numpy as np

np.Inf = np.inf  # surface-distance 0.1 predates numpy 2
import nibabel as nib  # noqa: E402
from surface_distance import compute_surface_dice_at_tolerance, compute_surface_distances  # noqa: E402

out, corpus, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
rows = {(r["case_id"], r["class"]): r for r in csv.DictReader(open(os.path.join(out, "metrics.csv")))}
header = next(csv.reader(open(os.path.join(out, "metrics.csv"))))


def fail(msg):
    print("MISMATCH:", msg)
    sys.exit(1)


def same(got, want, what, tol_rel=1e-12, tol_abs=1e-9):
    if want is None or (isinstance(want, float) and math.isnan(want)):
        if got != "":
            fail(f"{what}: slabflow {got!r}, reference empty")
        return
    if got == "" or not math.isclose(float(got), want, rel_tol=tol_rel, abs_tol=tol_abs):
        fail(f"{what}: slabflow {got!r} vs reference {want!r}")


checked = nsd_checked = 0
for case_dir in sorted(glob.glob(os.path.join(corpus, "*", ""))):
    case = os.path.basename(os.path.normpath(case_dir))
    ct = nib.load(os.path.join(case_dir, "ct.nii.gz"))
    spacing = [float(s) for s in ct.header.get_zooms()[:3]]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    models = sorted(os.listdir(os.path.join(case_dir, "predictions")))
    for pred in sorted(glob.glob(os.path.join(case_dir, "predictions", models[0], "*.nii.gz"))):
        cls = os.path.basename(pred)[: -len(".nii.gz")]
        r = rows.get((case, cls))
        if r is None:
            fail(f"no row for {case}/{cls}")
        what = f"{case}/{cls}"
        probs = {m: nib.load(os.path.join(case_dir, "predictions", m, cls + ".nii.gz")).get_fdata() / 255 for m in models}
        consensus = np.mean([probs[m] for m in models], axis=0) > 0.5
        same(r["consensus_voxels"], float(consensus.sum()), what + " consensus_voxels")
        same(r["volume_ml"], consensus.sum() * voxel_ml, what + " volume_ml")
        masks = {m: probs[m] > 0.5 for m in models}
        for m in models:
            same(r[f"volume_ml_{m}"], masks[m].sum() * voxel_ml, f"{what} volume_ml_{m}")
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                total = masks[a].sum() + masks[b].sum()
                want = 2.0 * (masks[a] & masks[b]).sum() / total if total else None
                same(r[f"dice_{a}_{b}"], want, f"{what} dice_{a}_{b}")
        label = os.path.join(case_dir, "segmentations", cls + ".nii.gz")
        if not os.path.exists(label):
            same(r["dice"], None, what + " dice")
            same(r["nsd"], None, what + " nsd")
            checked += 1
            continue
        g = nib.load(label).get_fdata() > 0
        total = g.sum() + consensus.sum()
        same(r["dice"], 2.0 * (g & consensus).sum() / total if total else None, what + " dice")
        sd = compute_surface_distances(g, consensus, spacing)
        nsd = compute_surface_dice_at_tolerance(sd, tol)
        same(r["nsd"], None if math.isnan(nsd) else float(nsd), what + " nsd", tol_rel=0, tol_abs=1e-9)
        checked += 1
        nsd_checked += 1
print(f"OK {checked} rows, {nsd_checked} NSD values")
