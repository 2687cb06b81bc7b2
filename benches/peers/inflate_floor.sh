#!/usr/bin/env bash
# The inflate floor: CPU seconds to merely decompress every .nii.gz under DIR to /dev/null with
# the fastest inflater on the machine — ISA-L's `igzip` (Debian package `isal`; installed here
# if missing and apt can) — and with `gzip` (zlib's classic inflate) for comparison.
# usage: inflate_floor.sh DIR [REPEAT]; prints "<igzip cpu s> <gzip cpu s> <files> <bytes>",
# medians of REPEAT passes.
set -euo pipefail
dir=$1
repeat=${2:-3}
if ! command -v igzip >/dev/null; then
  { apt-get install -y -q isal || sudo apt-get install -y -q isal; } >/dev/null 2>&1 || true
fi
command -v igzip >/dev/null || { echo "igzip not found: install Debian's isal package" >&2; exit 1; }
mapfile -t files < <(find "$dir" -name '*.nii.gz' | sort)
cpu() { # CPU seconds (user + sys) of inflating every file with "$@"
  local t
  t=$( { /usr/bin/time -f "%U %S" bash -c 'for f in "${@:2}"; do $1 -d -c "$f" >/dev/null; done' _ "$1" "${files[@]}"; } 2>&1 | tail -1)
  awk '{printf "%.3f\n", $1 + $2}' <<<"$t"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
ig=$(for _ in $(seq "$repeat"); do cpu igzip; done | median)
gz=$(for _ in $(seq "$repeat"); do cpu gzip; done | median)
bytes=$(du -cb "${files[@]}" | tail -1 | cut -f1)
echo "$ig $gz ${#files[@]} $bytes"
