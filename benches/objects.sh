#!/usr/bin/env bash
# A full-size case (512×512×300, 27 uint8 predictions, 121 MB gzip; attention_peers.sh's) read
# from a bucket on a real S3 server on loopback — SeaweedFS `weed mini` from the reference venv,
# telemetry off — against the same case read from local disk: paper attention + rank, median
# wall and peak memory of REPEAT runs each, and the requests a bucket run made; then the same
# with the outputs written to the bucket too (Zarr chunks PUT as they are made).
#
# usage: benches/objects.sh [REPEAT]   (default 3)
set -euo pipefail
source "$(dirname "$0")/common.sh"
repeat=${1:-3}
weed=$(dirname "$py")/weed
work=$root/target/bench-objects
rm -rf "$work" && mkdir -p "$work/weed"
corpus=$root/target/bench-attention/corpus300
[ -f "$corpus/meta.csv" ] || "$sf" synth --out "$corpus" --cases 1 --shape 512 512 300 2>/dev/null
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
b=44300
"$weed" mini -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
  -master.port=$((b + 1)) -volume.port=$((b + 2)) -filer.port=$((b + 3)) -s3.port=$((b + 4)) \
  -admin.port=$((b + 5)) -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 >"$work/weed.log" 2>&1 &
pid=$!
trap 'kill $pid; wait $pid 2>/dev/null || true' EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$((b + 4))
# The filer takes the upload (objects of bucket B live under /buckets/B).
for _ in $(seq 100); do
  "$weed" filer.copy "$corpus" "http://127.0.0.1:$((b + 3))/buckets/bench/" >/dev/null 2>&1 && break
  sleep 0.2
done
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
[[stages]]
kind = "rank"
TOML
read -r t_disk m_disk < <(measure "$repeat" "rm -rf $work/out" -- "$sf" run "$work/attention.toml" --input "$corpus" --output "$work/out")
read -r t_s3 m_s3 < <(measure "$repeat" "rm -rf $work/out" -- "$sf" run "$work/attention.toml" --input s3://bench/corpus300 --output "$work/out")
# The filer deletes a prefix of the bucket in one request.
clear_out="curl -s -X DELETE 'http://127.0.0.1:$((b + 3))/buckets/bench/out/?recursive=true&ignoreRecursiveError=true' >/dev/null"
read -r t_s3out m_s3out < <(measure "$repeat" "$clear_out" -- "$sf" run "$work/attention.toml" --input s3://bench/corpus300 --output s3://bench/out)
rm -rf "$work/out"
requests=$("$sf" run "$work/attention.toml" --input s3://bench/corpus300 --output "$work/out" 2>&1 | grep "^Object storage")
eval "$clear_out"
requests_out=$("$sf" run "$work/attention.toml" --input s3://bench/corpus300 --output s3://bench/out 2>&1 | grep "^Object storage")
echo "Input: $corpus, 512×512×300, $(du -sh "$corpus" | cut -f1) gzip; $(nproc) cores; SeaweedFS $("$weed" version 2>/dev/null | head -1 | awk '{print $3}') on loopback"
printf "%-28s%9s%10s\n" "" "wall s" "peak MiB"
printf "%-28s%9.2f%10.0f\n" "from local disk" "$t_disk" "$((m_disk >> 20))"
printf "%-28s%9.2f%10.0f\n" "from a bucket (s3://)" "$t_s3" "$((m_s3 >> 20))"
printf "%-28s%9.2f%10.0f\n" "bucket to bucket" "$t_s3out" "$((m_s3out >> 20))"
echo "from a bucket:    $requests"
echo "bucket to bucket: $requests_out"
