"""Run one command pinned to one CPU and print its wall time, CPU time and peak RSS as JSON.

A child's peak RSS on Linux includes what its parent held when it forked, so the benchmark
forks contenders from this small process instead of from itself (which holds decoded photos).
"""

import json
import os
import subprocess
import sys
import time

cpu, argv = int(sys.argv[1]), sys.argv[2:]
os.sched_setaffinity(0, {cpu})
started = time.perf_counter()
process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
errors = process.stderr.read()
_, status, usage = os.wait4(process.pid, 0)
wall = time.perf_counter() - started
print(json.dumps({"status": status, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                  "rss_mib": usage.ru_maxrss / 1024, "stderr": errors.decode(errors="replace")}))
