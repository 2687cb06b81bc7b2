#!/usr/bin/env bash
# Rounds of the loop: what a rerun costs against the first run, on full-size cases
# (512×512×300, 3 models × 9 classes, `slabflow synth --all-labels`) with the contract's
# pipeline plus assemble (release export) and review, under the memory limit of a 2 GiB node.
# Each row changes one thing on the output of the row before and reruns; the rerun redoes only
# what the change affects (README, "Rounds of the loop").
#
# usage: benches/rerun.sh [CASES]      (default 4)
set -euo pipefail
source "$(dirname "$0")/common.sh"
n=${1:-4}
work=$root/target/bench-rerun
mkdir -p "$work"
base=$work/base$n
[ -f "$base/meta.csv" ] || "$sf" synth --out "$base" --cases "$n" --shape 512 512 300 --all-labels 2>/dev/null
corpus=$work/corpus
rm -rf "$corpus" "$work/out"
cp -r "$base" "$corpus"
pipe() { # pipe BUDGET TOLERANCE
  sed -e "s/budget = 0.05 /budget = $1 /" -e "s/nsd_tolerance_mm = 1.0/nsd_tolerance_mm = $2/" \
      -e 's/^memory_limit = .*/memory_limit = "1792MiB"/' "$root/pipelines/contract.toml" > "$work/p.toml"
  printf '\n[[stages]]\nkind = "assemble"\nexport_nifti = true\n\n[[stages]]\nkind = "review"\n' >> "$work/p.toml"
}
run() { /usr/bin/time -f "%e %M" "$sf" run "$work/p.toml" --input "$corpus" --output "$work/out" 2>&1 >/dev/null | tail -1; }
first=""
row() { # row LABEL
  read -r t kib < <(run)
  [ -n "$first" ] || first=$t
  printf "%-58s%9.2f%9.1f%%%10d\n" "$1" "$t" "$("$py" -c "print(100 * $t / $first)")" $((kib >> 10))
}
echo "$n full-size cases; $(nproc) cores"
printf "%-58s%9s%10s%10s\n" "run" "wall s" "of first" "peak MiB"
pipe 0.05 1.0; row "first run"
row "again, nothing changed"
for f in "$corpus"/*/ct.nii.gz "$corpus"/*/predictions/*/*.nii.gz; do touch "$f"; done
row "every input file touched (same bytes: digests compared)"
pipe 0.5 1.0; row "rank.budget 0.05 → 0.5"
pipe 0.5 2.0; row "metrics.nsd_tolerance_mm 1.0 → 2.0"
c1=$(ls "$corpus" | grep BDMAP | head -1)
cp "$corpus/$c1/predictions/unet/spleen.nii.gz" "$corpus/$c1/predictions/unet/liver.nii.gz"
row "one prediction file replaced (one case)"
mkdir -p "$corpus/$c1/revised"
cp "$corpus/$c1/segmentations/liver.nii.gz" "$corpus/$c1/revised/liver.nii.gz"
row "one revised label added (one case)"
