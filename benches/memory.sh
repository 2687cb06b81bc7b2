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
corpus_of() { # N: a corpus of N cases cycling through the 4 cases of base48
  local n=$1 dir=$work/cases$1 ids=()
  while IFS=, read -r id ds; do [ "$id" = case_id ] || ids+=("$id,$ds"); done < "$work/base48/meta.csv"
  if [ ! -f "$dir/meta.csv" ]; then
    rm -rf "$dir"; mkdir -p "$dir"
    echo "case_id,dataset" > "$dir/meta.csv"
    for ((i = 0; i < n; i++)); do
      local src=${ids[$((i % 4))]} id
      id=$(printf "BDMAP_%08d" $((i + 1)))
      ln -s "$work/base48/${src%%,*}" "$dir/$id"
      echo "$id,${src#*,}" >> "$dir/meta.csv"
    done
  fi
}
corpus_of 1
corpus_of 4
corpus_of 32
"$py" "$root/benches/peers/memory_runs.py" "$sf" "$work" "$@"
