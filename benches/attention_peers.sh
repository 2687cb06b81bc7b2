#!/usr/bin/env bash
# Attention side by side on one full-size case (512×512×300, 3 models × 9 classes, uint8 soft
# predictions as the authors store them), made by `slabflow synth`:
#   slabflow run, paper attention + rank only (the same work as the peer)
#   slabflow run, the full default pipeline (convert + normalize + paper attention + metrics + rank)
#   the authors' way: nibabel get_fdata + numpy, one class at a time (benches/peers/authors_attention.py)
# Prints wall time, peak memory and ratios, checks the peer's numbers against slabflow's, and
# projects the 8,448-case corpus on this machine.
#
# usage: benches/attention_peers.sh [SLICES]   (default 300; the peer takes minutes and ~9 GB)
set -euo pipefail
source "$(dirname "$0")/common.sh"
slices=${1:-300}
work=$root/target/bench-attention
mkdir -p "$work"
corpus=$work/corpus$slices
[ -f "$corpus/meta.csv" ] || "$sf" synth --out "$corpus" --cases 1 --shape 512 512 "$slices" 2>/dev/null
case=$corpus/BDMAP_00000001
cat > "$work/attention.toml" <<TOML
version = 1
[input]
root = "."
ct = "{case}/ct.nii.gz"
prediction = "{case}/predictions/{model}/{class}.nii.gz"
models = ["swin_unetr", "nnunet", "unet"]
classes = ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava", "pancreas"]
[output]
dir = "out"
[[stages]]
kind = "attention"
mode = "paper"
[[stages]]
kind = "rank"
TOML
echo "Input: $case (512×512×$slices, 27 uint8 predictions, $(du -sh "$case" | cut -f1) gzip); $(nproc) cores"
read -r t_att m_att < <(measure 1 "rm -rf $work/out_att" -- "$sf" run "$work/attention.toml" --input "$corpus" --output "$work/out_att")
read -r t_all m_all < <(measure 1 "rm -rf $work/out_all" -- "$sf" run pipelines/contract.toml --input "$corpus" --output "$work/out_all")
read -r t_peer m_peer < <(measure 1 ":" -- "$py" benches/peers/authors_attention.py "$case" "$work/out_att/metrics.csv" "$work/peer.txt")
"$py" - "$t_att" "$m_att" "$t_all" "$m_all" "$t_peer" "$m_peer" <<'PY'
import sys
t_att, m_att, t_all, m_all, t_peer, m_peer = map(float, sys.argv[1:])
mib = 1 << 20
print(f"{'':<44}{'wall s':>9}{'peak MiB':>10}{'vs peer':>9}{'memory':>8}")
print(f"{'slabflow: paper attention + rank':<44}{t_att:>9.2f}{m_att / mib:>10.0f}{t_peer / t_att:>8.0f}x{m_peer / m_att:>7.0f}x")
print(f"{'slabflow: full default pipeline':<44}{t_all:>9.2f}{m_all / mib:>10.0f}{t_peer / t_all:>8.0f}x{m_peer / m_all:>7.0f}x")
print(f"{'authors way (nibabel get_fdata + numpy)':<44}{t_peer:>9.2f}{m_peer / mib:>10.0f}{'1':>8}x{'1':>7}x")
cases = 8448
print(f"projection for {cases} such cases on this machine: paper attention + rank {cases * t_att / 3600:.1f} h, "
      f"full pipeline {cases * t_all / 3600:.1f} h, authors' way {cases * t_peer / 86400:.1f} days")
PY
cat "$work/peer.txt"
