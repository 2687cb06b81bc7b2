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
