"""Writes a corpus for the metrics tests with nibabel: per case (one per spacing), per class a
chosen pair of masks — the original label G and three models' uint8 predictions whose
consensus (mean p > 0.5) is P — covering spheres, thin plates, masks touching the volume's
border, touching structures, random blobs, and empty masks.

usage: gen_metrics_corpus.py OUTDIR
Layout: OUTDIR/<case>/ct.nii.gz, predictions/<model>/<class>.nii.gz, segmentations/<class>.nii.gz
(a class without a label file is "not annotated"), meta.csv.
"""
import os
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage

out = sys.argv[1]
CLASSES = ["sphere", "thin", "border", "touching", "blobs", "empty_gt", "empty_both", "unlabelled"]
MODELS = ["m1", "m2", "m3"]
SPACINGS = {"iso15": (1.5, 1.5, 1.5), "aniso07": (0.7, 0.7, 1.0), "aniso09x5": (0.9, 0.9, 5.0), "thin03": (0.8, 0.8, 0.3)}
shape = (34, 30, 26)
rng = np.random.default_rng(42)
grid = np.indices(shape)


def ball(c, r):
    return sum((g - ci) ** 2 for g, ci in zip(grid, c)) <= r * r


def box(lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def blobs():
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    return noise > 0.15


def pair(cls):
    """(G or None, P) for a class."""
    if cls == "sphere":
        return ball((16, 14, 12), 7), ball((17, 14, 13), 7.5)
    if cls == "thin":
        g = box((5, 5, 10), (28, 25, 11))
        return g, np.roll(g, 1, axis=2)
    if cls == "border":
        return box((0, 3, 15), (12, 20, 26)), box((0, 2, 14), (13, 21, 26))
    if cls == "touching":
        a = box((4, 4, 4), (14, 14, 14))
        return a, a | box((14, 4, 4), (20, 14, 14))
    if cls == "blobs":
        return blobs(), blobs()
    if cls == "empty_gt":
        return np.zeros(shape, bool), ball((10, 10, 10), 3)
    if cls == "empty_both":
        return np.zeros(shape, bool), np.zeros(shape, bool)
    return None, ball((20, 20, 15), 4)


meta = ["case_id,dataset"]
for case, spacing in SPACINGS.items():
    d = os.path.join(out, case)
    os.makedirs(os.path.join(d, "segmentations"), exist_ok=True)
    affine = np.diag(list(spacing) + [1.0])
    ct = (rng.normal(40, 10, shape)).astype(np.int16)
    nib.save(nib.Nifti1Image(ct, affine), os.path.join(d, "ct.nii.gz"))
    for cls in CLASSES:
        g, p = pair(cls)
        if g is not None:
            nib.save(nib.Nifti1Image(g.astype(np.uint8), affine), os.path.join(d, "segmentations", cls + ".nii.gz"))
        # m1 and m2 predict P (with soft values), m3 a dilated P: the consensus is P.
        soft = np.where(p, rng.integers(140, 256, shape), rng.integers(0, 100, shape) * (rng.random(shape) < 0.05))
        preds = {"m1": soft, "m2": np.where(p, 255, 0), "m3": np.where(ndimage.binary_dilation(p), 200, 0)}
        for m in MODELS:
            os.makedirs(os.path.join(d, "predictions", m), exist_ok=True)
            nib.save(nib.Nifti1Image(preds[m].astype(np.uint8), affine), os.path.join(d, "predictions", m, cls + ".nii.gz"))
    meta.append(f"{case},synthetic")
open(os.path.join(out, "meta.csv"), "w").write("\n".join(meta) + "\n")
print(f"wrote {len(SPACINGS)} cases to {out}")
