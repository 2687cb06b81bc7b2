#!/usr/bin/env bash
# Conversion side by side, in one run, on the same input:
#   slabflow run (NIfTI → NIfTI-Zarr, default codec)
#   nibabel + zarr-python (load through dataobj, write zstd-3 Zarr; benches/peers/nibabel_zarr.py)
#   nii2zarr --levels 1 (PyPI nifti-zarr)
# on a 512×512×300 int16 CT .nii.gz made by `slabflow synth --ct-only`, then slabflow alone on
# 100/300/600 slices to show that its peak memory does not grow with the volume.
#
# usage: benches/convert_peers.sh [REPEAT]     (default 3; medians of wall time, max peak RSS)
# Needs python3; makes target/py-venv from tests/python/requirements.txt if missing.
set -euo pipefail
source "$(dirname "$0")/common.sh"
repeat=${1:-3}
work=$root/target/bench-convert
mkdir -p "$work"
nii2zarr=$(dirname "$py")/nii2zarr

make_ct() { # slices
  local dir=$work/ct$1
  [ -f "$dir/BDMAP_00000001/ct.nii.gz" ] || "$sf" synth --out "$dir" --cases 1 --shape 512 512 "$1" --ct-only 2>/dev/null
  echo "$dir"
}
ct_only_pipeline "$work/ct.toml"


corpus=$(make_ct 300)
ct=$corpus/BDMAP_00000001/ct.nii.gz
echo "Input: $ct ($(du -h "$ct" | cut -f1) gzip, 512×512×300 int16); $(nproc) cores; median of $repeat runs"
read -r t_sf m_sf < <(measure "$repeat" "rm -rf $work/out" -- "$sf" run "$work/ct.toml" --input "$corpus" --output "$work/out")
read -r t_nz m_nz < <(measure "$repeat" "rm -rf $work/peer.zarr" -- "$py" benches/peers/nibabel_zarr.py "$ct" "$work/peer.zarr" 16)
read -r t_n2 m_n2 < <(measure "$repeat" "rm -rf $work/n2z.zarr" -- "$nii2zarr" --levels 1 "$ct" "$work/n2z.zarr")
size() { du -sm "$1" | cut -f1; }
"$py" - "$t_sf" "$m_sf" "$t_nz" "$m_nz" "$t_n2" "$m_n2" "$(size "$work/out/cases")" "$(size "$work/peer.zarr")" "$(size "$work/n2z.zarr")" <<'PY'
import sys
t_sf, m_sf, t_nz, m_nz, t_n2, m_n2 = map(float, sys.argv[1:7])
s_sf, s_nz, s_n2 = sys.argv[7:10]
mib = 1 << 20
print(f"{'tool':<28}{'wall s':>8}{'peak MiB':>10}{'out MiB':>9}{'speed-up':>10}{'memory':>9}")
print(f"{'slabflow run':<28}{t_sf:>8.2f}{m_sf / mib:>10.0f}{s_sf:>9}{'1.0x':>10}{'1.0x':>9}")
print(f"{'nibabel + zarr-python':<28}{t_nz:>8.2f}{m_nz / mib:>10.0f}{s_nz:>9}{t_nz / t_sf:>9.1f}x{m_nz / m_sf:>8.1f}x")
print(f"{'nii2zarr --levels 1':<28}{t_n2:>8.2f}{m_n2 / mib:>10.0f}{s_n2:>9}{t_n2 / t_sf:>9.1f}x{m_n2 / m_sf:>8.1f}x")
print("(speed-up and memory: the peer's time and peak memory divided by slabflow's)")
PY

echo
echo "slabflow peak memory against the number of slices (512×512 int16):"
for n in 100 300 600; do
  c=$(make_ct "$n")
  read -r t m < <(measure "$repeat" "rm -rf $work/out" -- "$sf" run "$work/ct.toml" --input "$c" --output "$work/out")
  echo "  $n slices: $t s, peak $((m / 1048576)) MiB"
done
