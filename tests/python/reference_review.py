"""Reference for the review stage's exports, in numpy on files read by nibabel and zarr-python.

usage: reference_review.py OUT CORPUS CLASSES_PER_CASE
For every flagged case of ranking.csv: review/<case>/attention_<class>.nii.gz must be
(a / a.max() * 255).astype(uint8) of slabflow's attention/<class> map (zeros when a.max() is 0),
review/<case>/pseudo_labels.nii.gz the consensus (mean p > 0.5, predictions read by nibabel)
as a label map (class k -> k + 1, overlaps to the first class), both with the CT's affine; and
worklist.csv the flagged cases in rank order with their classes by attention_sum (metrics.csv).
"""
import csv
import os
import sys

import nibabel as nib
import numpy as np
import zarr
from common import CLASSES, MODELS, fail, find, probs

out, corpus, per_case = sys.argv[1], sys.argv[2], int(sys.argv[3])


ranking = list(csv.DictReader(open(os.path.join(out, "ranking.csv"))))
flagged = [r for r in ranking if r["flagged"] == "true"]
metrics = {(r["case_id"], r["class"]): r for r in csv.DictReader(open(os.path.join(out, "metrics.csv")))}
worklist = list(csv.DictReader(open(os.path.join(out, "worklist.csv"))))
if [w["case_id"] for w in worklist] != [r["case_id"] for r in flagged]:
    fail(f"worklist {[w['case_id'] for w in worklist]} vs flagged {[r['case_id'] for r in flagged]}")
for w in worklist:
    case = w["case_id"]
    sums = [(float(metrics[(case, c)]["attention_sum"]), c) for c in CLASSES]
    want = [c for s, c in sorted(sums, key=lambda t: (-t[0], t[1])) if s > 0][:per_case]
    if w["classes"].split(";") != want:
        fail(f"worklist {case}: classes {w['classes']} vs {want}")
    ct = nib.load(find(os.path.join(corpus, case, "ct.nii.gz")))
    for c in CLASSES:
        a = zarr.open_array(os.path.join(out, "cases", case + ".zarr", "attention", c, "0"), mode="r")[:].transpose(2, 1, 0)
        heat = (a / a.max() * 255).astype(np.uint8) if a.max() > 0 else np.zeros(a.shape, np.uint8)
        img = nib.load(os.path.join(out, "review", case, f"attention_{c}.nii.gz"))
        if not np.allclose(img.affine, ct.affine) or not np.array_equal(np.asanyarray(img.dataobj), heat):
            fail(f"{case} heatmap {c} differs")
    P = [[probs(os.path.join(corpus, case, "predictions", m, c + ".nii.gz")) for c in CLASSES] for m in MODELS]
    labels = np.zeros(ct.shape[:3], np.uint8)
    for k in reversed(range(len(CLASSES))):
        labels[np.mean([P[m][k] for m in range(len(MODELS))], axis=0) > 0.5] = k + 1
    img = nib.load(os.path.join(out, "review", case, "pseudo_labels.nii.gz"))
    if not np.allclose(img.affine, ct.affine) or not np.array_equal(np.asanyarray(img.dataobj), labels):
        fail(f"{case} pseudo labels differ")
print(f"OK {len(worklist)} flagged cases exported")
