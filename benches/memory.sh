#!/usr/bin/env bash
# Memory that stays flat: every stage kind alone and the whole loop, on 512×512 cases of 48,
# 768 and 1,536 slices (one case at a time) and on corpora of 4 and 32 cases of 48 slices (one
# case at a time and with the default workers). Each run is repeated with output paths of
# different lengths (the heap's layout depends on them) and the worst peak RSS is kept; it is
# printed beside what the run reserved (case_memory × cases at once + the process's base).
# Checks: every peak within 10 % between 48 and 1,536 slices and between 4 and 32 cases, and
# below the reservation.
#
# The 32-case corpus repeats 4 synthetic cases under new ids (directory symlinks).
# Takes about half an hour on 2 cores.
#
# usage: benches/memory.sh [STAGE_SET...]   (default: all; names as printed)
set -euo pipefail
source "$(dirname "$0")/common.sh"
work=$root/target/bench-memory
mkdir -p "$work"
synth_labels() { # DIR CASES SLICES
  [ -f "$1/meta.csv" ] || "$sf" synth --out "$1" --cases "$2" --shape 512 512 "$3" --all-labels 2>/dev/null
}
synth_labels "$work/base48" 4 48
synth_labels "$work/slices768" 1 768
synth_labels "$work/slices1536" 1 1536
for n in 1 4 32; do repeat_corpus "$work/base48" "$n" "$work/cases$n" >/dev/null; done
"$py" "$root/benches/peers/memory_runs.py" "$sf" "$work" "$@"
