#!/usr/bin/env bash
# Fuzzes the NIfTI header parser and slab reader (plain and gzip) for SECONDS (default 120),
# starting from the nibabel-written fixtures of tests/data/nifti.
#   cargo install cargo-fuzz   # once
#   fuzz/run.sh 300
# cargo-fuzz needs nightly features; on a stable toolchain RUSTC_BOOTSTRAP=1 enables them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
corpus=fuzz/corpus/nifti
mkdir -p "$corpus"
cp tests/data/nifti/*.nii tests/data/nifti/*.nii.gz "$corpus"/ 2>/dev/null || true
RUSTC_BOOTSTRAP=1 cargo fuzz run nifti "$corpus" -- -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536
