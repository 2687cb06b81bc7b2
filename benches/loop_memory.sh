#!/usr/bin/env bash
# The rest of the active-learning loop on full-size cases (512×512×SLICES, labels for all nine
# classes): assemble (with the .nii.gz release export), evaluate, rank and review, run on
# 100 and 300 slices — wall time and peak memory, to show memory does not grow with the volume.
#
# usage: benches/loop_memory.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
work=$root/target/bench-loop
mkdir -p "$work"
{ corpus_input .; cat <<TOML; } > "$work/loop.toml"
[output]
dir = "out"
[[stages]]
kind = "attention"
[[stages]]
kind = "assemble"
export_nifti = true
[[stages]]
kind = "evaluate"
[[stages]]
kind = "rank"
budget = 1.0
[[stages]]
kind = "review"
TOML
echo "attention + assemble (with .nii.gz export) + evaluate + rank + review (every case flagged); $(nproc) cores"
for s in 100 300; do
  c=$root/target/bench-metrics/corpus$s
  [ -f "$c/meta.csv" ] || "$sf" synth --out "$c" --cases 1 --shape 512 512 "$s" --all-labels 2>/dev/null
  read -r t m < <(measure 1 "rm -rf $work/out" -- "$sf" run "$work/loop.toml" --input "$c" --output "$work/out")
  echo "  512×512×$s: $t s, peak $((m >> 20)) MiB"
done
