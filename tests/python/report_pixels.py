"""Renders slices of the report's cards with numpy, from the Zarr arrays as zarr-python reads
them, and compares them pixel for pixel with the PNGs embedded in report.html (decoded by
Pillow): the formula of src/report/render.rs — orientation from the CT's affine (nibabel
reads the NIfTI header stored beside the array), nearest-neighbour resampling to square
pixels, the abdominal window, the heat overlay, the consensus contour, the palette.

usage: report_pixels.py OUT REPORT.html   (checks every picture of every card)
prints "OK <n> pictures" or fails naming the first difference.
"""
import base64
import csv
import io
import math
import os
import re
import sys

import nibabel as nib
import numpy as np
import zarr
from PIL import Image

out, page = sys.argv[1], sys.argv[2]
WINDOW, SIZE, CONTOUR = (-175.0, 250.0), 256, (0, 255, 255)
GREYS, HEATS, UNDER = 32, 8, 16


def fail(msg):
    print("FAIL", msg)
    sys.exit(1)


def palette():
    p = []
    for q in range(GREYS):
        p += [math.floor(q * 255 / (GREYS - 1) + 0.5)] * 3
    for k in range(1, HEATS + 1):
        a = k / HEATS
        alpha = 0.3 + 0.5 * a
        heat = [1.0, 0.9 * a, 0.0]
        for q in range(UNDER):
            g = q / (UNDER - 1)
            p += [math.floor(((1 - alpha) * g + alpha * h) * 255 + 0.5) for h in heat]
    return p + list(CONTOUR)


# Orientation from nibabel's own reading of the affine: aff2axcodes names the direction each
# voxel axis grows towards (R/L, A/P, S/I). Radiological display: R on the left, A or S on
# top, so an axis is flipped where its index grows towards R, A or S.
LATERAL, FRONTAL = "RL", "AP"


def render(ct, att, cons, col_axis, row_axis, spacing, aff):
    """The palette indices of a slice given as (rows, cols) arrays, and the edge letters."""
    codes = nib.orientations.aff2axcodes(aff)
    cc, rc = codes[col_axis], codes[row_axis]
    rank = lambda c: 0 if c in LATERAL else 1 if c in FRONTAL else 2
    across_is_col = rank(cc) <= rank(rc)
    if not across_is_col:
        ct, cons = ct.T, cons.T
        att = None if att is None else att.T
        cc, rc, col_axis, row_axis = rc, cc, row_axis, col_axis
    flip_across, flip_down = cc in "RAS", rc in "RAS"
    opposite = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
    ends = lambda c: (c, opposite[c]) if c in "RAS" else (opposite[c], c)
    letters = ends(cc) + ends(rc)
    n_down, n_across = ct.shape
    v_across, v_down = spacing[col_axis], spacing[row_axis]
    mm = max(n_across * v_across, n_down * v_down) / SIZE
    width = max(1, math.floor(n_across * v_across / mm + 0.5))
    height = max(1, math.floor(n_down * v_down / mm + 0.5))

    def source(n, v, flip, count):
        k = np.minimum(np.floor((np.arange(count) + 0.5) * mm / v).astype(np.int64), n - 1)
        return n - 1 - k if flip else k

    xs = source(n_across, v_across, flip_across, width)
    ys = source(n_down, v_down, flip_down, height)
    g = np.clip((ct[np.ix_(ys, xs)].astype(np.float64) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0.0, 1.0)
    idx = np.floor(g * (GREYS - 1) + 0.5).astype(np.int64)
    if att is not None and att.max() > 0:
        a = att[np.ix_(ys, xs)].astype(np.float64) / float(att.astype(np.float64).max())
        k = np.minimum(np.ceil(a * HEATS), HEATS).astype(np.int64)
        q = np.floor(g * (UNDER - 1) + 0.5).astype(np.int64)
        idx = np.where(a > 0, GREYS + (k - 1) * UNDER + q, idx)
    m = cons[np.ix_(ys, xs)] != 0
    pad = np.pad(m, 1, constant_values=False)
    interior = pad[1:-1, :-2] & pad[1:-1, 2:] & pad[:-2, 1:-1] & pad[2:, 1:-1]
    edge = m & ~interior
    idx = np.where(edge, GREYS + HEATS * UNDER, idx)
    return idx.astype(np.uint8), (width, height), letters


html = open(page, encoding="utf-8").read()
imgs = re.findall(
    r'<img class="slice" data-case="([^"]+)" data-class="([^"]+)" data-view="(\w+)"[^>]*?src="data:image/png;base64,([^"]+)">'
    r'<span class="edge l">(\w)</span><span class="edge r">(\w)</span><span class="edge t">(\w)</span><span class="edge b">(\w)</span>',
    html,
)
if not imgs:
    fail("no pictures in the page")
metrics = {(r["case_id"], r["class"]): r for r in csv.DictReader(open(os.path.join(out, "metrics.csv")))}
models = [k[len("volume_ml_"):] for k in next(iter(metrics.values())) if k.startswith("volume_ml_")]
want_palette = palette()
checked = 0
for case, cls, view, data, *edges in imgs:
    im = Image.open(io.BytesIO(base64.b64decode(data)))
    if im.mode != "P":
        fail(f"{case}/{cls}/{view}: PNG mode {im.mode}, not indexed")
    if im.getpalette()[: len(want_palette)] != want_palette:
        fail(f"{case}/{cls}/{view}: the palette differs")
    got = np.array(im)
    group = zarr.open_group(os.path.join(out, "cases", case + ".zarr"), mode="r")
    hdr_bytes = bytes(np.asarray(group["ct/nifti"][:], dtype=np.uint8))
    hdr = (nib.Nifti2Header if len(hdr_bytes) >= 540 else nib.Nifti1Header).from_fileobj(io.BytesIO(hdr_bytes))
    aff, spacing = hdr.get_best_affine(), [float(z) for z in hdr.get_zooms()[:3]]
    r = metrics[(case, cls)]
    pz, py = int(r["attention_peak_z"]), int(r["attention_peak_y"])
    sel = (pz, slice(None), slice(None)) if view == "axial" else (slice(None), py, slice(None))
    ct = np.asarray(group["ct/0"][sel]).astype(np.float64)
    att = np.asarray(group[f"attention/{cls}/0"][sel]).astype(np.float64) if f"attention/{cls}" in group else None
    probs = []
    for m in models:
        p = np.asarray(group[f"predictions/{m}/{cls}/0"][sel])
        probs.append(p.astype(np.float64) / 255.0 if p.dtype == np.uint8 else p.astype(np.float64))
    cons = (np.mean(probs, axis=0) > 0.5).astype(np.uint8)
    row_axis = 1 if view == "axial" else 2
    want, (w, h), letters = render(ct, att, cons, 0, row_axis, spacing, aff)
    if tuple(edges) != letters:
        fail(f"{case}/{cls}/{view}: edge letters {edges}, nibabel's axcodes give {letters}")
    if got.shape != (h, w):
        fail(f"{case}/{cls}/{view}: {got.shape[1]}×{got.shape[0]} pixels, reference {w}×{h}")
    diff = np.argwhere(got != want)
    if len(diff):
        y, x = diff[0]
        fail(f"{case}/{cls}/{view}: {len(diff)} pixels differ, first at (x={x}, y={y}): {got[y, x]} vs {want[y, x]}")
    checked += 1
print(f"OK {checked} pictures")
