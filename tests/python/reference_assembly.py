"""Reference for the assemble stage (paper step 6), in numpy on files read by nibabel.

usage: reference_assembly.py prepare CORPUS
       reference_assembly.py check OUT CORPUS PRIORITY
prepare writes annotator-revised masks for some (case, class) pairs: {case}/revised/{class}.nii.gz,
uint8, model unet's p > 0.3 (so they differ from the consensus), with the CT's affine.
check compares, per case and class, slabflow's final/<class> and final/combined_labels (Zarr,
read by zarr-python) and the .nii.gz exports under OUT/release (read by nibabel, affine
included) with the priority rule: original label > revised mask > consensus (mean p > 0.5);
combined ids = index in CLASSES + 1, overlaps going to the first class in PRIORITY (a
comma-separated list; the classes it leaves out follow in CLASSES order); and assembly.csv.
"""
import csv
import os
import sys

import nibabel as nib
import numpy as np
import zarr
from common import CLASSES, MODELS, fail, find, probs


def cases(corpus):
    return sorted(d for d in os.listdir(corpus) if os.path.isdir(os.path.join(corpus, d)))


def prepare(corpus):
    made = 0
    for i, case in enumerate(cases(corpus)):
        if i % 2:
            continue
        ct = nib.load(find(os.path.join(corpus, case, "ct.nii.gz")))
        os.makedirs(os.path.join(corpus, case, "revised"), exist_ok=True)
        for cls in ("liver", "spleen", "pancreas"):
            p = probs(find(os.path.join(corpus, case, "predictions", "unet", f"{cls}.nii.gz")))
            mask = (p > 0.3).astype(np.uint8)
            nib.save(nib.Nifti1Image(mask, ct.affine), os.path.join(corpus, case, "revised", f"{cls}.nii.gz"))
            made += 1
    print(f"prepared {made} revised masks")


def check(out, corpus, priority):
    order = [CLASSES.index(c) for c in priority if c]
    order += [k for k in range(len(CLASSES)) if k not in order]
    rows = {(r["case_id"], r["class"]): r for r in csv.DictReader(open(os.path.join(out, "assembly.csv")))}
    sources = {"original": 0, "revised": 0, "pseudo": 0}
    for case in cases(corpus):
        ct = nib.load(find(os.path.join(corpus, case, "ct.nii.gz")))
        finals = []
        for cls in CLASSES:
            label = find(os.path.join(corpus, case, "segmentations", f"{cls}.nii.gz"))
            revised = find(os.path.join(corpus, case, "revised", f"{cls}.nii.gz"))
            if label:
                source, mask = "original", nib.load(label).get_fdata() > 0
            elif revised:
                source, mask = "revised", nib.load(revised).get_fdata() > 0
            else:
                ps = [probs(find(os.path.join(corpus, case, "predictions", m, f"{cls}.nii.gz"))) for m in MODELS]
                source, mask = "pseudo", np.mean(ps, axis=0) > 0.5
            mask = mask.astype(np.uint8)
            finals.append(mask)
            sources[source] += 1
            got = zarr.open_array(os.path.join(out, "cases", f"{case}.zarr", "final", cls, "0"))[:]
            if not np.array_equal(got, mask.transpose(2, 1, 0)):
                fail(f"{case} {cls}: final/{cls} differs from the {source} mask in {np.sum(got != mask.transpose(2, 1, 0))} voxels")
            row = rows.get((case, cls))
            if row is None or row["source"] != source or int(row["voxels"]) != int(mask.sum()):
                fail(f"{case} {cls}: assembly.csv {row} but expected {source}, {int(mask.sum())} voxels")
            exp = nib.load(os.path.join(out, "release", case, "segmentations", f"{cls}.nii.gz"))
            if not np.allclose(exp.affine, ct.affine) or not np.array_equal(np.asanyarray(exp.dataobj), mask):
                fail(f"{case} {cls}: the .nii.gz export differs (affine or voxels)")
        combined = np.zeros(finals[0].shape, np.uint8)
        for k in reversed(order):
            combined[finals[k] > 0] = k + 1
        got = zarr.open_array(os.path.join(out, "cases", f"{case}.zarr", "final", "combined_labels", "0"))[:]
        if not np.array_equal(got, combined.transpose(2, 1, 0)):
            fail(f"{case}: final/combined_labels differs in {np.sum(got != combined.transpose(2, 1, 0))} voxels")
        exp = nib.load(os.path.join(out, "release", case, "combined_labels.nii.gz"))
        if not np.allclose(exp.affine, ct.affine) or not np.array_equal(np.asanyarray(exp.dataobj), combined):
            fail(f"{case}: combined_labels.nii.gz differs (affine or voxels)")
    print(f"OK {len(cases(corpus))} cases; sources {sources}")


if sys.argv[1] == "prepare":
    prepare(sys.argv[2])
else:
    check(sys.argv[2], sys.argv[3], sys.argv[4].split(","))
