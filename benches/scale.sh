#!/usr/bin/env bash
# Corpus scale: the contract's pipeline (unchanged; convert + normalize + paper attention +
# metrics + rank) with the memory limit of a 2 GiB node, over
#   - corpora of 4, 16 and 64 full-size cases (512×512×300, 3 models × 9 classes, uint8 soft
#     predictions, labels for some classes: `slabflow synth`), and
#   - single cases of 100, 400 and 1,000 slices (512×512),
# printing wall time, seconds per case, peak RSS against the limit, and the projection for the
# 8,448-case AbdomenAtlas corpus on this machine.
#
# The 16- and 64-case corpora repeat 4 distinct synthetic cases under new ids (directory
# symlinks): synthesizing 64 full-size cases would take half an hour, and a case's cost does not
# depend on its id. Inputs stay in the page cache either way (the machine has 24 GiB).
# Each run writes a new output directory, all removed at the end (see floor.sh: on ext4
# without a journal, files created right after as many were deleted cost far more).
#
# usage: benches/scale.sh [LIMIT]      (default 1792MiB: a 2 GiB node, less the system's share)
set -euo pipefail
source "$(dirname "$0")/common.sh"
limit=${1:-1792MiB}
work=$root/target/bench-scale
mkdir -p "$work"
rm -rf "$work"/out.*
trap 'rm -rf "$work"/out.*' EXIT
base=$work/base
[ -f "$base/meta.csv" ] || "$sf" synth --out "$base" --cases 4 --shape 512 512 300 2>/dev/null
corpus_of() { repeat_corpus "$base" "$1" "$work/cases$1"; }

limit_bytes=$("$py" -c "
import re, sys
m = re.fullmatch(r'([0-9.]+)\s*([KMGT]i?B)?', sys.argv[1]); u = {'KiB': 2**10, 'MiB': 2**20, 'GiB': 2**30, 'KB': 1e3, 'MB': 1e6, 'GB': 1e9}
print(int(float(m[1]) * u.get(m[2] or '', 1)))" "$limit")
echo "Contract pipeline, --memory-limit $limit; $(nproc) cores"
printf "%-34s%9s%10s%11s%11s\n" "corpus" "wall s" "s/case" "peak MiB" "of limit"
rows=()
for n in 4 16 64; do
  c=$(corpus_of $n)
  read -r t m < <(measure 1 : -- "$sf" run pipelines/contract.toml --input "$c" --output "$work/out.$n" --memory-limit "$limit")
  per=$("$py" -c "print(f'{$t / $n:.2f}')")
  printf "%-34s%9.1f%10s%11d%10d%%\n" "$n cases of 512×512×300" "$t" "$per" $((m >> 20)) $((100 * m / limit_bytes))
  rows+=("$n $t")
done
for s in 100 400 1000; do
  c=$work/slices$s
  [ -f "$c/meta.csv" ] || "$sf" synth --out "$c" --cases 1 --shape 512 512 "$s" 2>/dev/null
  read -r t m < <(measure 1 : -- "$sf" run pipelines/contract.toml --input "$c" --output "$work/out.s$s" --memory-limit "$limit")
  printf "%-34s%9.1f%10s%11d%10d%%\n" "1 case of 512×512×$s" "$t" "" $((m >> 20)) $((100 * m / limit_bytes))
done
"$py" - "${rows[@]}" <<'PY'
import sys
n, t = map(float, sys.argv[-1].split())
per = t / n
print(f"Projection from the 64-case run: {per:.2f} s per case, {2 * per:.2f} core-seconds per case;")
print(f"8,448 cases (AbdomenAtlas-8K, 1.2 TB) on this 2-core machine: {8448 * per / 3600:.1f} h")
PY
