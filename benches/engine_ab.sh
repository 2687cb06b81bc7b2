#!/usr/bin/env bash
# Two slabflow binaries side by side, alternating runs on the same full-size inputs — how an
# engine change is shown to be no slower and no larger (benches/README.md, "The engine"):
#   attention: paper attention + rank, one 512×512×300 case (attention_peers.sh's pipeline)
#   contract:  the contract pipeline, 4 cases of 512×512×300, --memory-limit 1792MiB (scale.sh)
#   loop:      attention + assemble (.nii.gz export) + evaluate + rank + review, one case of
#              512×512×300 with labels for all 9 classes (loop_memory.sh's pipeline)
#   stream:    the same without review, whose export of the flagged case (~6 s, gzip) is
#              the same in both and hides what the engine changes
# Prints, per pipeline and binary, the median wall seconds, CPU seconds and the largest peak RSS
# of REPEAT runs.
#
# usage: benches/engine_ab.sh BEFORE AFTER [REPEAT]   (BEFORE, AFTER: paths to slabflow binaries)
set -euo pipefail
source "$(dirname "$0")/common.sh"
before=$1 after=$2 repeat=${3:-3}
work=$root/target/bench-engine
mkdir -p "$work"
att=$root/target/bench-attention/corpus300
[ -f "$att/meta.csv" ] || "$sf" synth --out "$att" --cases 1 --shape 512 512 300 2>/dev/null
four=$root/target/bench-scale/base
[ -f "$four/meta.csv" ] || "$sf" synth --out "$four" --cases 4 --shape 512 512 300 2>/dev/null
labelled=$root/target/bench-metrics/corpus300
[ -f "$labelled/meta.csv" ] || "$sf" synth --out "$labelled" --cases 1 --shape 512 512 300 --all-labels 2>/dev/null
head=$'version = 1\n[input]\nroot = "."\nct = "{case}/ct.nii.gz"\nprediction = "{case}/predictions/{model}/{class}.nii.gz"\nlabel = "{case}/segmentations/{class}.nii.gz"\nmetadata = "meta.csv"\nmodels = ["swin_unetr", "nnunet", "unet"]\nclasses = ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava", "pancreas"]\n[output]\ndir = "out"\n'
printf '%s[[stages]]\nkind = "attention"\nmode = "paper"\n[[stages]]\nkind = "rank"\n' "$head" > "$work/attention.toml"
printf '%s[[stages]]\nkind = "attention"\n[[stages]]\nkind = "assemble"\nexport_nifti = true\n[[stages]]\nkind = "evaluate"\n[[stages]]\nkind = "rank"\nbudget = 1.0\n[[stages]]\nkind = "review"\n' "$head" > "$work/loop.toml"
printf '%s[[stages]]\nkind = "attention"\n[[stages]]\nkind = "assemble"\nexport_nifti = true\n[[stages]]\nkind = "evaluate"\n[[stages]]\nkind = "rank"\nbudget = 1.0\n' "$head" > "$work/stream.toml"
"$py" - "$work" "$before" "$after" "$repeat" "$att" "$four" "$labelled" "$root/pipelines/contract.toml" <<'PY'
import os, shutil, statistics, subprocess, sys, time
work, before, after, repeat, att, four, labelled, contract = sys.argv[1:]
runs = [
    ("attention", f"{work}/attention.toml", att, []),
    ("contract", contract, four, ["--memory-limit", "1792MiB"]),
    ("loop", f"{work}/loop.toml", labelled, []),
    ("stream", f"{work}/stream.toml", labelled, []),
]
print(f"{'pipeline':<11}{'binary':<8}{'wall s':>8}{'CPU s':>8}{'peak MiB':>10}")
for name, pipeline, corpus, extra in runs:
    got = {b: ([], [], []) for b in ("before", "after")}
    for _ in range(int(repeat)):
        for label, binary in (("before", before), ("after", after)):
            out = f"{work}/out-{label}"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            p = subprocess.Popen([binary, "run", pipeline, "--input", corpus, "--output", out, *extra],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"{binary} failed on {name}")
            w, c, m = got[label]
            w.append(time.perf_counter() - t); c.append(ru.ru_utime + ru.ru_stime); m.append(ru.ru_maxrss / 1024)
    for label in ("before", "after"):
        w, c, m = got[label]
        print(f"{name:<11}{label:<8}{statistics.median(w):>8.2f}{statistics.median(c):>8.2f}{max(m):>10.0f}")
PY
