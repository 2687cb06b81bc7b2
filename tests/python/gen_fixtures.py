"""Writes the NIfTI fixtures of tests/data/nifti with nibabel, and what nibabel reads back.

Run from the repository root:  python tests/python/gen_fixtures.py
Each readable fixture NAME gets NAME.fdata: nibabel's get_fdata() transposed to (z, y, x),
little-endian float64; manifest.json records shape, datatype and get_best_affine(). Hostile
fixtures are listed with the words their error must contain. Output is deterministic.
"""
import gzip
import io
import json
import os

import nibabel as nib
import numpy as np

OUT = os.path.join("tests", "data", "nifti")
rng = np.random.default_rng(20261128)
manifest = {"readable": {}, "hostile": {}}

RAS = np.array([[0.75, 0, 0, -20.0], [0, 0.8, 0, 10.5], [0, 0, 2.5, -7.25], [0, 0, 0, 1]])
LPS = np.array([[-0.75, 0, 0, 20.0], [0, -0.8, 0, -10.5], [0, 0, 2.5, -7.25], [0, 0, 0, 1]])
# Oblique: a rotation about z by 30 degrees, as a scanner with gantry tilt might write.
c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
OBLIQUE = np.array([[0.7 * c, -0.7 * s, 0, 3.0], [0.7 * s, 0.7 * c, 0, -4.0], [0, 0, 1.5, 12.0], [0, 0, 0, 1]])


def values(dtype, shape):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 300).astype(dt)
    info = np.iinfo(dt)
    lo, hi = max(info.min, -3000), min(info.max, 3000)
    a = rng.integers(lo, hi, size=shape, endpoint=True).astype(dt)
    a.flat[0], a.flat[-1] = info.min, info.max  # the type's extremes
    return a


def record(name, img_path):
    img = nib.load(img_path)
    data = img.get_fdata()
    while data.ndim > 3:
        data = data[..., 0]
    data.transpose(2, 1, 0).astype("<f8").tofile(os.path.join(OUT, name + ".fdata"))
    manifest["readable"][name] = {
        "file": os.path.basename(img_path),
        "shape": list(data.shape),
        "datatype": str(img.get_data_dtype().newbyteorder("=")),
        "affine": img.header.get_best_affine().tolist(),
    }


def save(name, img, ext=".nii"):
    path = os.path.join(OUT, name + ext)
    nib.save(img, path)
    if ext == ".nii.gz":
        # nibabel's gzip header carries a timestamp; rewrite with mtime 0 for stable bytes.
        raw = gzip.decompress(open(path, "rb").read())
        with open(path, "wb") as f:
            f.write(gzip.compress(raw, mtime=0))
    record(name, path)
    return path


def nifti1(data, affine=RAS, dtype=None, endian="<", slope=None, inter=None, qform_only=False):
    hdr = nib.Nifti1Header(endianness=endian)
    hdr.set_data_dtype(dtype or data.dtype)
    img = nib.Nifti1Image(data, affine, hdr)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    if qform_only:
        img.set_sform(None, code=0)
        img.set_qform(affine, code=1)
    return img


os.makedirs(OUT, exist_ok=True)
shape = (7, 6, 5)

# Every datatype, plain .nii.
for dt in ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"]:
    save(f"dtype_{dt}", nifti1(values(dt, shape), dtype=dt))

# Scaling as nibabel applies it; nibabel must not rescale our chosen raw values on save, so
# the raw array is written with an explicit slope through the dataobj's unscaled path.
def scaled(name, dt, slope, inter, ext=".nii"):
    raw = values(dt, shape)
    img = nib.Nifti1Image(raw, RAS)
    img.header.set_data_dtype(dt)
    bio = io.BytesIO()
    img.to_file_map({"image": nib.FileHolder(fileobj=bio), "header": nib.FileHolder(fileobj=bio)})
    b = bytearray(bio.getvalue())
    # scl_slope at byte 112, scl_inter at 116 (little-endian float32).
    b[112:116] = np.float32(slope).tobytes()
    b[116:120] = np.float32(inter).tobytes()
    path = os.path.join(OUT, name + ext)
    with open(path, "wb") as f:
        f.write(gzip.compress(bytes(b), mtime=0) if ext == ".nii.gz" else bytes(b))
    record(name, path)


scaled("scaled_int16", "int16", 0.5, -1024.0, ".nii.gz")
scaled("scaled_uint8", "uint8", 2.0, -1000.0)
scaled("scaled_float32", "float32", 3.0, 1.5)
scaled("slope_nan", "int16", float("nan"), 5.0)
scaled("slope_zero", "int16", 0.0, 5.0)
scaled("uint16_hu", "uint16", 1.0, -1024.0, ".nii.gz")

# Byte orders, orientations, qform-only, 4-D with one frame.
save("big_endian_int16", nifti1(values("int16", shape), endian=">"))
save("big_endian_float64", nifti1(values("float64", shape), endian=">"), ".nii.gz")
save("lps_int16", nifti1(values("int16", shape), affine=LPS), ".nii.gz")
save("oblique_qform_only", nifti1(values("int16", shape), affine=OBLIQUE, qform_only=True))
save("four_d_one_frame", nifti1(values("int16", shape + (1,))))

# NIfTI-2.
n2 = nib.Nifti2Image(values("int16", shape), LPS)
save("nifti2_int16", n2)
save("nifti2_float32_gz", nib.Nifti2Image(values("float32", shape), RAS), ".nii.gz")

# Several slabs: 32 x 24 x 37 int16, gzip.
save("multislab_int16", nifti1(values("int16", (32, 24, 37)), affine=LPS), ".nii.gz")

# Multi-member gzip (as pigz/bgzip write): three members concatenated.
src = os.path.join(OUT, "dtype_int16.nii")
raw = open(src, "rb").read()
parts = [raw[:200], raw[200:500], raw[500:]]
path = os.path.join(OUT, "multi_member.nii.gz")
with open(path, "wb") as f:
    for p in parts:
        f.write(gzip.compress(p, mtime=0))
record("multi_member", path)

# Hostile files: each must fail with a clear error, no panic and no huge allocation.
def hostile(name, data, words):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    manifest["hostile"][name] = words


good = open(os.path.join(OUT, "multislab_int16.nii.gz"), "rb").read()
good_raw = gzip.decompress(good)
hostile("truncated.nii.gz", good[: len(good) * 6 // 10], ["truncated"])
hostile("truncated.nii", good_raw[: len(good_raw) // 2], ["truncated"])
hostile("garbage.nii.gz", gzip.compress(b"this is a text file, not an image\n" * 20, mtime=0), ["not a NIfTI"])
hostile("png_instead.nii", b"\x89PNG\r\n\x1a\n" + bytes(400), ["not a NIfTI"])
hostile("empty.nii", b"", ["truncated"])
corrupt = bytearray(good)
mid = len(corrupt) // 2
corrupt[mid : mid + 64] = bytes(64)
hostile("corrupt_deflate.nii.gz", bytes(corrupt), ["gzip"])

hdr = bytearray(raw[:352])
hdr[40:56] = np.array([3, 32767, 32767, 32767, 1, 1, 1, 1], "<i2").tobytes()
hostile("huge_dims.nii", bytes(hdr), ["exceeds"])
hdr = bytearray(raw)
hdr[70:72] = np.int16(128).tobytes()  # rgb24
hostile("rgb24.nii", bytes(hdr), ["unsupported", "rgb24"])
hdr = bytearray(raw)
hdr[40:56] = np.array([3, 7, -6, 5, 1, 1, 1, 1], "<i2").tobytes()
hostile("negative_dim.nii", bytes(hdr), ["dim[2]"])
hdr = bytearray(raw)
hdr[40:56] = np.array([4, 7, 6, 5, 3, 1, 1, 1], "<i2").tobytes()
hostile("four_d_three_frames.nii", bytes(hdr), ["only 3-D"])
hdr = bytearray(raw)
hdr[108:112] = np.float32(1e12).tobytes()
hostile("far_vox_offset.nii", bytes(hdr), ["vox_offset"])

with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
print(f"wrote {len(manifest['readable'])} readable and {len(manifest['hostile'])} hostile fixtures to {OUT}")
