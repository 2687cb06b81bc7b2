"""Reference for the evaluate stage (the paper's Table 1), in numpy/scipy on files read by nibabel.

usage: reference_evaluation.py prepare CORPUS
       reference_evaluation.py OUT CORPUS THRESHOLD MIN_VOXELS
prepare replaces some labels of the first case with masks written by nibabel that are hard for
a streamed labeller: a helix that winds through every slice and touches the borders, two
snakes that only join in the last slice, and a field of small specks.
For every case and annotated class: error region = consensus (mean p > 0.5) XOR label; attention
region = paper attention (std + mean entropy + overlap) > THRESHOLD; both labelled with
scipy.ndimage.label (3x3x3 structure: 26-connectivity), components under MIN_VOXELS dropped;
checks evaluation.csv's counts, touching counts, largest and total sizes exactly, sensitivity and
precision, and evaluation_summary.csv (numpy mean/std over cases).
"""
import csv
import math
import os
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage, special
from common import CLASSES, MODELS, fail, find, probs

if sys.argv[1] == "prepare":
    corpus = sys.argv[2]
    case = sorted(d for d in os.listdir(corpus) if d.startswith("BDMAP_"))[0]
    seg = os.path.join(corpus, case, "segmentations")
    ct = nib.load([os.path.join(corpus, case, f) for f in ("ct.nii.gz", "ct.nii") if os.path.exists(os.path.join(corpus, case, f))][0])
    X, Y, Z = ct.shape[:3]
    helix = np.zeros((X, Y, Z), np.uint8)
    for z in range(Z):
        t = 2 * np.pi * z / 8
        x, y = int((X - 1) / 2 * (1 + np.cos(t))), int((Y - 1) / 2 * (1 + np.sin(t)))
        helix[max(x - 1, 0):x + 2, max(y - 1, 0):y + 2, z] = 1
    snakes = np.zeros((X, Y, Z), np.uint8)
    snakes[2, 2, :] = 1
    snakes[X - 3, Y - 3, :] = 1
    for k in range(2, min(X, Y) - 2):
        snakes[k, k, Z - 1] = 1
    rng = np.random.default_rng(7)
    specks = (rng.random((X, Y, Z)) < 0.02).astype(np.uint8)
    os.makedirs(seg, exist_ok=True)
    for name, mask in (("liver", helix), ("spleen", snakes), ("aorta", specks)):
        nib.save(nib.Nifti1Image(mask, ct.affine), os.path.join(seg, name + ".nii.gz"))
    print(f"prepared 3 labels of {case}")
    sys.exit(0)

out, corpus, thr, min_voxels = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])


def components(region, other):
    labels, n = ndimage.label(region, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    touched = np.zeros(n + 1, bool)
    touched[np.unique(labels[other & (labels > 0)])] = True
    keep = sizes >= min_voxels
    largest = int(sizes[keep].max()) if keep.any() else 0
    return int(keep.sum()), int((touched[1:] & keep).sum()), largest, int(sizes[keep].sum())


def close(a, b, what):
    if a == "" or b is None:
        if not (a == "" and b is None):
            fail(f"{what}: slabflow {a!r} vs reference {b!r}")
        return
    if not math.isclose(float(a), b, rel_tol=1e-12, abs_tol=1e-12):
        fail(f"{what}: slabflow {a!r} vs reference {b!r}")


rows = {(r["case_id"], r["class"]): r for r in csv.DictReader(open(os.path.join(out, "evaluation.csv")))}
per_class = {c: ([], []) for c in CLASSES}
checked = total_errors = total_found = 0
for case in sorted(d for d in os.listdir(corpus) if d.startswith("BDMAP_")):
    d = os.path.join(corpus, case)
    P = np.stack([np.stack([probs(os.path.join(d, "predictions", m, c + ".nii.gz")) for c in CLASSES]) for m in MODELS])
    std = P.std(axis=0)
    unc = special.entr(P).mean(axis=0)
    above = P > 0.5
    overlap = np.any(above & (above.sum(axis=1)[:, None] >= 2), axis=0)
    attention = std + unc + overlap
    consensus = P.mean(axis=0) > 0.5
    for ci, c in enumerate(CLASSES):
        label = find(os.path.join(d, "segmentations", c + ".nii.gz"))
        r = rows.get((case, c))
        if not label:
            if r is not None:
                fail(f"{case}/{c}: evaluated without a label")
            continue
        if r is None:
            fail(f"evaluation.csv has no row for {case}/{c}")
        err = consensus[ci] ^ (nib.load(label).get_fdata() > 0)
        att = attention[ci] > thr
        ne, found, le, ve = components(err, att)
        na, on, la, va = components(att, err)
        got = tuple(int(r[k]) for k in ("error_components", "errors_found", "largest_error_voxels", "error_voxels",
                                        "attention_components", "attention_on_errors", "largest_attention_voxels",
                                        "attention_voxels"))
        if got != (ne, found, le, ve, na, on, la, va):
            fail(f"{case}/{c}: slabflow {got} vs scipy {(ne, found, le, ve, na, on, la, va)}")
        sens = found / ne if ne else None
        prec = on / na if na else None
        close(r["sensitivity"], sens, f"{case}/{c} sensitivity")
        close(r["precision"], prec, f"{case}/{c} precision")
        if sens is not None:
            per_class[c][0].append(sens)
        if prec is not None:
            per_class[c][1].append(prec)
        checked += 1
        total_errors += ne
        total_found += found
for r in csv.DictReader(open(os.path.join(out, "evaluation_summary.csv"))):
    s, p = per_class[r["class"]]
    for name, v in (("sensitivity", s), ("precision", p)):
        if int(r[f"cases_{name}"]) != len(v):
            fail(f"summary {r['class']} {name}: {r[f'cases_{name}']} cases vs {len(v)}")
        close(r[f"{name}_mean"], float(np.mean(v)) if v else None, f"summary {r['class']} {name}_mean")
        close(r[f"{name}_std"], float(np.std(v)) if v else None, f"summary {r['class']} {name}_std")
if checked == 0 or total_errors == 0:
    fail("nothing was evaluated")
print(f"OK {checked} case-classes, {total_errors} error components ({total_found} found by attention)")
