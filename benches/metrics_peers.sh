#!/usr/bin/env bash
# The metrics stage on one full-size case (512×512×SLICES, 3 models × 9 classes, labels for
# all nine classes): its share of the default pipeline's time (the pipeline with and without
# it), its peak memory at 100 and SLICES slices, and DeepMind surface-distance + numpy on the
# same case (benches/peers/deepmind_nsd.py) side by side.
#
# usage: benches/metrics_peers.sh [SLICES]   (default 300)
set -euo pipefail
source "$(dirname "$0")/common.sh"
slices=${1:-300}
work=$root/target/bench-metrics
mkdir -p "$work"
corpus() { # slices
  local dir=$work/corpus$1
  [ -f "$dir/meta.csv" ] || "$sf" synth --out "$dir" --cases 1 --shape 512 512 "$1" --all-labels 2>/dev/null
  echo "$dir"
}
without=$work/without-metrics.toml
grep -v -e '^kind = "metrics"' -e '^nsd_tolerance_mm' pipelines/contract.toml | sed '/^\[\[stages\]\]$/{N;/\n$/d}' > "$without"
c=$(corpus "$slices")
echo "Input: 512×512×$slices, 27 uint8 predictions, labels for 9 classes; $(nproc) cores"
read -r t_with m_with < <(measure 1 "rm -rf $work/out1" -- "$sf" run pipelines/contract.toml --input "$c" --output "$work/out1")
read -r t_without m_without < <(measure 1 "rm -rf $work/out2" -- "$sf" run "$without" --input "$c" --output "$work/out2")
read -r t_dm m_dm < <(measure 1 ":" -- "$py" benches/peers/deepmind_nsd.py "$c/BDMAP_00000001")
c100=$(corpus 100)
read -r t_100 m_100 < <(measure 1 "rm -rf $work/out3" -- "$sf" run pipelines/contract.toml --input "$c100" --output "$work/out3")
"$py" - "$t_with" "$m_with" "$t_without" "$m_without" "$t_dm" "$m_dm" "$m_100" "$slices" <<'PY'
import sys
t_with, m_with, t_without, m_without, t_dm, m_dm, m_100 = map(float, sys.argv[1:8])
mib = 1 << 20
print(f"default pipeline with metrics:    {t_with:7.2f} s, peak {m_with / mib:5.0f} MiB")
print(f"default pipeline without metrics: {t_without:7.2f} s, peak {m_without / mib:5.0f} MiB")
print(f"metrics stage share of the pipeline's time: {(t_with - t_without) / t_with:.0%}")
print(f"DeepMind surface-distance + numpy Dice, 9 classes: {t_dm:7.2f} s, peak {m_dm / mib:5.0f} MiB "
      f"({t_dm / max(t_with - t_without, 1e-9):.0f}x the metrics stage's time)")
print(f"peak memory of the default pipeline: {m_100 / mib:.0f} MiB at 100 slices, {m_with / mib:.0f} MiB at {sys.argv[8]} slices")
PY
