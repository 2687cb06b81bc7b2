#!/usr/bin/env bash
# Every side-by-side comparison in one go, on inputs made by `slabflow synth`:
#   conversion   slabflow vs nibabel + zarr-python and nii2zarr     (convert_peers.sh)
#   attention    slabflow vs the authors' way (nibabel + numpy)      (attention_peers.sh)
#   metrics      slabflow's metrics stage vs DeepMind surface-distance (metrics_peers.sh)
#   scale        4/16/64 cases and 100/400/1000 slices, corpus projection (scale.sh)
# Each prints wall time, peak memory and ratios. The authors' way takes ~8 minutes and ~7.5 GB,
# DeepMind's NSD ~2 minutes and 5 GB; the whole script about 25 minutes.
#
# usage: benches/peers.sh
set -euo pipefail
here=$(dirname "$0")
for script in convert_peers.sh attention_peers.sh metrics_peers.sh scale.sh; do
  echo "=== $script"
  bash "$here/$script"
  echo
done
