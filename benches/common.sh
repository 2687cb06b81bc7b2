# Shared by the side-by-side bench scripts (sourced, not run): builds slabflow, finds or makes
# the Python reference venv, and defines `measure REPEAT SETUP -- CMD…` (median wall seconds,
# peak RSS bytes; benches/peers/measure.py).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cargo build --release --quiet
sf=$root/target/release/slabflow
py=${SLABFLOW_PYTHON:-$root/target/py-venv/bin/python}
if [ ! -x "$py" ]; then
  python3 -m venv "$root/target/py-venv"
  "$py" -m pip install -q -r tests/python/requirements.txt
fi
measure() { "$py" "$root/benches/peers/measure.py" "$@"; }

# repeat_corpus BASE N DIR: a corpus of N cases in DIR cycling through BASE's cases under new
# ids (directory symlinks; a case's cost does not depend on its id); prints DIR.
repeat_corpus() {
  local base n=$2 dir=$3 ids=() id ds
  base=$(realpath "$1")   # the links must not depend on where they are read from
  while IFS=, read -r id ds; do [ "$id" = case_id ] || ids+=("$id,$ds"); done < "$base/meta.csv"
  if [ ! -f "$dir/meta.csv" ]; then
    rm -rf "$dir"; mkdir -p "$dir"
    echo "case_id,dataset" > "$dir/meta.csv"
    for ((i = 0; i < n; i++)); do
      local src=${ids[$((i % ${#ids[@]}))]}
      id=$(printf "BDMAP_%08d" $((i + 1)))
      ln -s "$base/${src%%,*}" "$dir/$id"
      echo "$id,${src#*,}" >> "$dir/meta.csv"
    done
  fi
  echo "$dir"
}

# corpus_input ROOT: the `version` line and the [input] section of the synthetic corpus layout
# (CT, predictions, labels, meta.csv; the three models and nine classes), for a pipeline here.
corpus_input() {
  cat <<TOML
version = 1
[input]
root = "$1"
ct = "{case}/ct.nii.gz"
prediction = "{case}/predictions/{model}/{class}.nii.gz"
label = "{case}/segmentations/{class}.nii.gz"
metadata = "meta.csv"
models = ["swin_unetr", "nnunet", "unet"]
classes = ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava", "pancreas"]
TOML
}

# ct_only_pipeline FILE: a pipeline converting the CTs alone ({case}/ct.nii.gz under --input).
ct_only_pipeline() {
  cat > "$1" <<TOML
version = 1
[input]
root = "."
ct = "{case}/ct.nii.gz"
[output]
dir = "out"
TOML
}
