#!/usr/bin/env bash
# The report of a whole corpus (issue 18): 8,448 cases of which 423 flagged (the paper's 5 %),
# synthetic and small (64 distinct 96×96×32 cases under 8,448 ids), through attention, metrics,
# rank and review; then `slabflow report`. Prints the time to make the page, its size — its
# pictures apart — and the size it would have with full-size pictures: the mean picture of two
# full-size cases (`floor.sh`'s corpus, 512×512×300, both flagged) in place of the small ones.
#
# usage: benches/report_size.sh [CASES]   (default 8448)
set -euo pipefail
source "$(dirname "$0")/common.sh"
cases=${1:-8448}
work=$root/target/bench-report
mkdir -p "$work"
[ -f "$work/base/meta.csv" ] || "$sf" synth --out "$work/base" --cases 64 --shape 96 96 32 2>/dev/null
corpus=$(repeat_corpus "$work/base" "$cases" "$work/corpus-$cases")
pipeline() { # OUT BUDGET
  { corpus_input corpus; cat <<TOML; } > "$work/pipeline.toml"
[output]
dir = "$1"
[[stages]]
kind = "attention"
[[stages]]
kind = "metrics"
[[stages]]
kind = "rank"
budget = $2
[[stages]]
kind = "review"
TOML
}
pipeline "$work/out-$cases" 0.05
[ -f "$work/out-$cases/worklist.csv" ] || "$sf" run "$work/pipeline.toml" --input "$corpus" --output "$work/out-$cases" >/dev/null 2>&1
start=$(date +%s.%N)
"$sf" report --output "$work/out-$cases" 2>/dev/null
secs=$(echo "$(date +%s.%N) - $start" | bc)

# Full-size pictures: floor.sh's two cases, both flagged.
full=$root/target/bench-floor/corpus
[ -f "$full/meta.csv" ] || "$sf" synth --out "$full" --cases 2 --shape 512 512 300 --all-labels 2>/dev/null
pipeline "$work/out-full" 1.0
[ -f "$work/out-full/worklist.csv" ] || "$sf" run "$work/pipeline.toml" --input "$full" --output "$work/out-full" --memory-limit 1792MiB >/dev/null 2>&1
"$sf" report --output "$work/out-full" 2>/dev/null

"$py" - "$work/out-$cases/report.html" "$work/out-full/report.html" "$secs" <<'PY'
import re, sys
page, full, secs = open(sys.argv[1]).read(), open(sys.argv[2]).read(), float(sys.argv[3])
pics = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
full_pics = re.findall(r'src="data:image/png;base64,([^"]+)"', full)
cards, cases = page.count('<article class="card"'), page.count('<circle class="case')
mib = 1 << 20
rest = len(page.encode()) - sum(len(p) for p in pics)
mean_full = sum(len(p) for p in full_pics) / len(full_pics)
print(f"{cases} cases, {cards} flagged: report made in {secs:.1f} s")
print(f"page: {len(page.encode()) / mib:.1f} MiB = {len(pics)} pictures of {sum(len(p) for p in pics) / len(pics) / 1024:.1f} KiB "
      f"(base64; small cases) + {rest / mib:.1f} MiB of text, plots and tables")
print(f"with full-size pictures ({len(full_pics)} of mean {mean_full / 1024:.1f} KiB base64): "
      f"{(rest + len(pics) * mean_full) / mib:.1f} MiB")
PY
