"""Runs a command REPEAT times; prints the median wall time and the largest peak RSS.

usage: measure.py REPEAT SETUP_CMD -- CMD...
SETUP_CMD (a shell string, may be ':') runs before each repetition, unmeasured (e.g. removing
the previous output). `{rep}` in CMD's arguments becomes the repetition's number, for a fresh
output directory each time. Peak RSS is the child's own ru_maxrss from wait4, so each repetition is
measured alone. Output: one line "<median seconds> <peak bytes>", and with MEASURE_CPU=1 a
third field: the median CPU seconds (user + system) of the child.
"""
import os
import statistics
import subprocess
import sys
import time

repeat = int(sys.argv[1])
setup = sys.argv[2]
cmd = sys.argv[sys.argv.index("--") + 1:]
walls, peaks, cpus = [], [], []
for rep in range(repeat):
    subprocess.run(setup, shell=True, check=True)
    args = [a.replace("{rep}", str(rep)) for a in cmd]
    t = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    walls.append(time.perf_counter() - t)
    peaks.append(usage.ru_maxrss * 1024)
    cpus.append(usage.ru_utime + usage.ru_stime)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd} failed with status {status}")
line = f"{statistics.median(walls):.3f} {max(peaks)}"
if os.environ.get("MEASURE_CPU") == "1":
    line += f" {statistics.median(cpus):.3f}"
print(line)
