#!/usr/bin/env bash
# The contract pipeline against the inflate floor (issue 17): full-size cases
# (`slabflow synth --shape 512 512 300 --all-labels`: CT, 27 uint8 predictions, 9 labels each)
# through pipelines/contract.toml with memory_limit 1792MiB (two cases at a time on 2 cores);
# in the same run, the same .nii.gz files merely inflated to /dev/null with ISA-L's igzip (the
# fastest inflater here; benches/peers/inflate_floor.sh) and with GNU gzip. Prints CPU seconds
# per case, the ratio to the floor, wall per case and the projection for 8,448 cases; and the
# conversion alone of one CT against igzip inflating it.
#
# A corpus run is measured in its steady state: CASES cases (two synthetic ones repeated under
# new ids), so that most cases reuse the memory of the case before them on their worker as in a
# run over the corpus, rather than two cases that both fault their buffers in.
#
# Each repetition writes a new output directory; all are removed at the end. On a file system
# without a journal (this VM's ext4), creating files right after deleting as many costs far
# more: ext4 skips inode numbers freed in the last minutes (`find_inode_bit`,
# `recently_deleted`), so `rm -rf out` before each run added up to 1.9 s of system time for two
# cases (perf: 20–29 % of the run in inode allocation, against 1.6 % into a new directory).
# A run over a corpus creates files without deleting any.
#
# usage: benches/floor.sh [REPEAT] [CASES]   (defaults 3 and 8; medians)
set -euo pipefail
source "$(dirname "$0")/common.sh"
repeat=${1:-3}
cases=${2:-8}
work=$root/target/bench-floor
corpus=$work/corpus
mkdir -p "$work"
[ -f "$corpus/meta.csv" ] || "$sf" synth --out "$corpus" --cases 2 --shape 512 512 300 --all-labels 2>/dev/null
many=$(repeat_corpus "$corpus" "$cases" "$work/corpus-$cases")
rm -rf "$work"/out.* "$work"/cout.*
trap 'rm -rf "$work"/out.* "$work"/cout.*' EXIT
export MEASURE_CPU=1
read -r wall peak cpu < <(measure "$repeat" : -- \
  "$sf" run pipelines/contract.toml --input "$many" --output "$work/out.{rep}" --memory-limit 1792MiB)
# The floor of the two distinct cases; the repeated ones are the same files.
read -r igzip gzip files size < <(bash benches/peers/inflate_floor.sh "$corpus" "$repeat")

# Conversion alone: one CT, and igzip inflating that one file.
one=$work/one-ct
if [ ! -d "$one/BDMAP_00000001" ]; then
  mkdir -p "$one/BDMAP_00000001"
  cp "$corpus/BDMAP_00000001/ct.nii.gz" "$one/BDMAP_00000001/"
fi
ct_only_pipeline "$work/convert.toml"
read -r c_wall c_peak c_cpu < <(measure "$repeat" : -- "$sf" run "$work/convert.toml" --input "$one" --output "$work/cout.{rep}")
read -r c_igzip _ _ _ < <(bash benches/peers/inflate_floor.sh "$one" "$repeat")

"$py" - "$cases" "$wall" "$peak" "$cpu" "$igzip" "$gzip" "$files" "$size" "$c_wall" "$c_cpu" "$c_igzip" <<'PY'
import sys
cases = int(sys.argv[1])
wall, peak, cpu, igzip, gzip, files, size, c_wall, c_cpu, c_igzip = map(float, sys.argv[2:])
floor = igzip / 2  # per case: the two distinct cases' files
print(f"Input: {cases} cases of 512×512×300 with all labels (2 distinct: {int(files)} .nii.gz files, "
      f"{size / 2**20:.0f} MiB gzip); contract pipeline, memory_limit 1792MiB")
print(f"inflate floor (igzip -d to /dev/null): {floor:.2f} CPU s per case   (GNU gzip: {gzip / 2:.2f})")
print(f"slabflow:                              {cpu / cases:.2f} CPU s per case = {cpu / cases / floor:.1f}× the floor (target ≤ 7×)")
print(f"wall:                                  {wall / cases:.2f} s per case (two at a time), peak {peak / 2**20:.0f} MiB")
print(f"projection:                            {wall / cases * 8448 / 3600:.1f} h for 8,448 cases on this machine (target ≤ 5 h)")
print(f"conversion of one CT:                  {c_wall:.2f} s wall, {c_cpu:.2f} CPU s; igzip inflates it in {c_igzip:.2f} s: "
      f"{c_wall / c_igzip:.2f}× its CPU (target ≤ 1.5×)")
PY
