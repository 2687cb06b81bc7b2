"""benches/memory.sh's runs: peak RSS against the reservation, per stage set and input.

usage: memory_runs.py SLABFLOW WORK [STAGE_SET...]
"""
import os
import re
import shutil
import subprocess
import sys
import time

sf, work = sys.argv[1], sys.argv[2]
BASE = 48 << 20  # pipeline::budget::BASE_BYTES

HEAD = """version = 1
[input]
root = "corpus"
ct = "{case}/ct.nii.gz"
prediction = "{case}/predictions/{model}/{class}.nii.gz"
label = "{case}/segmentations/{class}.nii.gz"
revised = "{case}/revised/{class}.nii.gz"
metadata = "meta.csv"
models = ["swin_unetr", "nnunet", "unet"]
classes = ["spleen", "kidney_right", "kidney_left", "gall_bladder", "liver", "stomach", "aorta", "postcava", "pancreas"]
[output]
dir = "out"
[runtime]
memory_limit = "1GiB"
"""
STAGE = {
    "normalize": 'kind = "normalize"',
    "paper": 'kind = "attention"\nmode = "paper"',
    "released": 'kind = "attention"\nmode = "released"',
    "metrics": 'kind = "metrics"',
    "assemble": 'kind = "assemble"\nexport_nifti = true',
    "evaluate": 'kind = "evaluate"',
    "rank": 'kind = "rank"',
    "review": 'kind = "review"',
}
SETS = {
    "normalize": ["normalize"],
    "attention-paper": ["paper"],
    "attention-released": ["released"],
    "metrics": ["metrics"],
    "assemble+export": ["assemble"],
    "evaluate": ["evaluate"],
    "rank": ["paper", "rank"],
    "review": ["paper", "rank", "review"],
    "loop-paper": ["normalize", "paper", "metrics", "assemble", "evaluate", "rank", "review"],
    "loop-released": ["normalize", "released", "metrics", "assemble", "evaluate", "rank", "review"],
}
OUTS = [f"{work}/o", f"{work}/an-output-directory-with-a-much-longer-name-than-the-first/out"]


def pipeline(name, workers):
    text = HEAD + f"workers = {workers}\n"
    for s in SETS[name]:
        text += "[[stages]]\n" + STAGE[s] + "\n"
    path = f"{work}/{name}-w{workers}.toml"
    with open(path, "w") as f:
        f.write(text)
    return path


def run(name, corpus, workers):
    """Worst peak RSS over the output paths, the reservation, and the last wall time."""
    worst, reserved, wall = 0, None, 0.0
    for out in OUTS:
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        p = subprocess.Popen([sf, "run", pipeline(name, workers), "--input", corpus, "--output", out],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, RUST_LOG="info"))
        err = p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{name} on {corpus} failed:\n{err[-3000:]}")
        if "went over" in err:
            print(f"  warning from the run: {[l for l in err.splitlines() if 'went over' in l][0]}")
        # Cases at once (the plan) × the largest case's reservation ("Case finished." lines).
        at_once = int(re.search(r"workers=(\d+)", err)[1])
        per_case = max(int(r) for r in re.findall(r"reserved=(\d+)", err))
        reserved = at_once * per_case + BASE
        worst = max(worst, usage.ru_maxrss * 1024)
        shutil.rmtree(out, ignore_errors=True)
    return worst, reserved, wall


mib = lambda b: b / (1 << 20)
names = sys.argv[3:] or list(SETS)
ok = True
print(f"Peak RSS (worst of {len(OUTS)} output paths) and reservation, MiB; memory_limit 1GiB; {os.cpu_count()} cores")
print(f"{'stages':<20}{'input':<28}{'wall s':>8}{'peak':>8}{'reserved':>10}{'spread':>8}")
for name in names:
    series = [
        ("1 case, 48 slices", f"{work}/cases1", 1),
        ("1 case, 768 slices", f"{work}/slices768", 1),
        ("1 case, 1536 slices", f"{work}/slices1536", 1),
        ("4 cases, 1 at a time", f"{work}/cases4", 1),
        ("32 cases, 1 at a time", f"{work}/cases32", 1),
        ("4 cases, default", f"{work}/cases4", 0),
        ("32 cases, default", f"{work}/cases32", 0),
    ]
    peaks = {}
    for label, corpus, workers in series:
        peak, reserved, wall = run(name, corpus, workers)
        peaks[label] = peak
        below = peak < reserved
        ok &= below
        spread = ""
        if label.endswith("1536 slices"):
            group = [peaks[k] for k in peaks if k.startswith("1 case")]
            spread = max(group) / min(group) - 1
        elif label.startswith("32"):
            spread = peak / peaks[label.replace("32", "4")] - 1
        flag = ""
        if spread != "":
            ok &= spread <= 0.10
            flag = "" if spread <= 0.10 else "  > 10 %"
            spread = f"{100 * spread:+.1f}%"
        print(f"{name:<20}{label:<28}{wall:>8.1f}{mib(peak):>8.0f}{mib(reserved):>10.0f}{spread:>8}"
              f"{'' if below else '  over the reservation'}{flag}", flush=True)
print("all peaks flat within 10 % and below the reservation" if ok else "SOME CHECKS FAILED")
sys.exit(0 if ok else 1)
