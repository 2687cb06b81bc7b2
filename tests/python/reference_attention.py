"""Reference implementation of the contract's attention, consensus, Dice and ranking, in
float64 numpy/scipy on files read by nibabel; compares slabflow's outputs with it.

usage: reference_attention.py OUT CORPUS MODE BUDGET
MODE is "paper" or "released". CORPUS has the contract layout ({case}/ct.nii[.gz],
{case}/predictions/{model}/{class}.nii.gz, {case}/segmentations/{class}.nii.gz, meta.csv).
Checks every number of metrics.csv (relative 1e-6), ranking.csv exactly, and every voxel of
attention/<class> (released: equal; paper: equal to float32 rounding). Exits non-zero naming
the first mismatch.
"""
import csv
import glob
import math
import os
import sys

import nibabel as nib
import numpy as np
import zarr
from scipy import ndimage, special
from common import CLASSES, MODELS, fail, find, probs

out, corpus, mode, budget = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
STRUCT = np.ones((3, 3, 3), bool)


def close(a, b, what):
    if a == "" or b == "":
        if a != b:
            fail(f"{what}: slabflow {a!r} vs reference {b!r}")
        return
    a, b = float(a), float(b)
    if not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9):
        fail(f"{what}: slabflow {a!r} vs reference {b!r}")


meta = {r["case_id"]: r["dataset"] for r in csv.DictReader(open(os.path.join(corpus, "meta.csv")))}
rows = {(r["case_id"], r["class"]): r for r in csv.DictReader(open(os.path.join(out, "metrics.csv")))}
sizes = {}
checked = 0
peaks = 0
opened_voxels = 0  # released: voxels that survive the openings (the test must exercise them)
overlap_total = 0
for case_dir in sorted(glob.glob(os.path.join(corpus, "BDMAP_*"))):
    case = os.path.basename(case_dir)
    ct = nib.load(find(os.path.join(case_dir, "ct.nii.gz")))
    # normalize: MONAI ScaleIntensityRanged(a_min=-175, a_max=250, b_min=0, b_max=1, clip=True).
    norm = np.clip((ct.get_fdata() + 175.0) / 425.0, 0.0, 1.0).astype(np.float32).transpose(2, 1, 0)
    got = zarr.open_array(os.path.join(out, "cases", case + ".zarr", "ct_norm", "0"), mode="r")[:]
    if got.dtype != np.float32 or not np.allclose(got, norm, rtol=0, atol=1e-7):
        fail(f"{case}: ct_norm differs from the MONAI formula, max |d| = {np.abs(got - norm).max()}")
    voxel_ml = float(np.prod(ct.header.get_zooms()[:3])) / 1000.0
    P = np.stack([
        np.stack([probs(os.path.join(case_dir, "predictions", m, c + ".nii.gz")) for c in CLASSES]) for m in MODELS
    ])  # (N, C, X, Y, Z)
    std = P.std(axis=0)
    unc = special.entr(P).mean(axis=0)
    consensus = P.mean(axis=0) > 0.5
    if mode == "paper":
        above = P > 0.5
        count = above.sum(axis=1)
        overlap = np.any(above & (count[:, None] >= 2), axis=0)
        attention = std + unc + overlap
    else:
        overlap = consensus & (consensus.sum(axis=0) >= 2)
        attention = np.stack([
            ndimage.binary_dilation(ndimage.binary_erosion(std[c] > 0.1, STRUCT, iterations=2), STRUCT, iterations=2)
            | ndimage.binary_dilation(ndimage.binary_erosion(unc[c] > 0.05, STRUCT, iterations=2), STRUCT, iterations=2)
            | overlap[c]
            for c in range(len(CLASSES))
        ])
    if mode == "released":
        opened_voxels += int((attention & ~overlap).sum())
    overlap_total += int(overlap.sum())
    size = 0.0
    for ci, c in enumerate(CLASSES):
        r = rows.get((case, c))
        if r is None:
            fail(f"metrics.csv has no row for {case}/{c}")
        what = f"{case}/{c}"
        if r["dataset"] != meta[case]:
            fail(f"{what}: dataset {r['dataset']} vs {meta[case]}")
        att_sum = float(attention[ci].sum())
        size += att_sum
        close(r["attention_sum"], att_sum, what + " attention_sum")
        close(r["inconsistency_sum"], float(std[ci].sum()), what + " inconsistency_sum")
        close(r["uncertainty_sum"], float(unc[ci].sum()), what + " uncertainty_sum")
        close(r["overlap_voxels"], int(overlap[ci].sum()), what + " overlap_voxels")
        close(r["consensus_voxels"], int(consensus[ci].sum()), what + " consensus_voxels")
        close(r["volume_ml"], int(consensus[ci].sum()) * voxel_ml, what + " volume_ml")
        label = find(os.path.join(case_dir, "segmentations", c + ".nii.gz"))
        dice = ""
        if label:
            g = nib.load(label).get_fdata() > 0
            total = g.sum() + consensus[ci].sum()
            if total > 0:
                dice = 2.0 * (g & consensus[ci]).sum() / total
        close(r["dice"], dice, what + " dice")
        # The peak: the axial slice (z) and the coronal one (y) of the largest attention sum.
        a = attention[ci].astype(np.float64)
        zs, ys = a.sum(axis=(0, 1)), a.sum(axis=(0, 2))
        pz, py = r["attention_peak_z"], r["attention_peak_y"]
        if zs.max() > 0:
            pz, py = int(pz), int(py)
            # Sums in another order may differ in the last bits: a near-tie may go either way.
            if zs[pz] < zs.max() * (1 - 1e-9) or ys[py] < ys.max() * (1 - 1e-9):
                fail(f"{what}: peak z={pz}, y={py}; reference z={int(zs.argmax())}, y={int(ys.argmax())}")
            peaks += 1
        elif (pz, py) != ("", ""):
            fail(f"{what}: a peak ({pz}, {py}) where there is no attention")
        arr = zarr.open_array(os.path.join(out, "cases", case + ".zarr", "attention", c, "0"), mode="r")[:]
        want = attention[ci].transpose(2, 1, 0)
        if mode == "paper":
            if arr.dtype != np.float32 or not np.allclose(arr, want.astype(np.float32), rtol=0, atol=1e-6):
                fail(f"{what}: attention map differs, max |d| = {np.abs(arr - want).max()}")
        elif arr.dtype != np.uint8 or not np.array_equal(arr, want.astype(np.uint8)):
            diff = np.argwhere(arr != want.astype(np.uint8))
            fail(f"{what}: released attention map differs at {len(diff)} voxels, first (z,y,x) {diff[:3].tolist()}")
        checked += 1
    sizes[case] = size

ranking = list(csv.DictReader(open(os.path.join(out, "ranking.csv"))))
order = sorted(sizes, key=lambda c: (-sizes[c], c))
k = math.ceil(budget * len(order))
for i, (row, case) in enumerate(zip(ranking, order)):
    if row["case_id"] != case or int(row["rank"]) != i + 1:
        fail(f"ranking row {i + 1}: {row['case_id']} vs reference {case}")
    close(row["attention_size"], sizes[case], f"{case} attention_size")
    if row["flagged"] != ("true" if i + 1 <= k else "false"):
        fail(f"{case}: flagged {row['flagged']} at rank {i + 1} with budget {budget}")
if len(ranking) != len(order):
    fail(f"ranking.csv has {len(ranking)} rows, expected {len(order)}")
if overlap_total == 0 or (mode == "released" and opened_voxels == 0):
    fail(f"the corpus does not exercise the definitions (overlap {overlap_total}, opened {opened_voxels})")
if peaks == 0:
    fail("no class has attention: the peaks were not checked")
print(f"OK {checked} class maps, {peaks} peaks, {len(order)} cases ranked")
