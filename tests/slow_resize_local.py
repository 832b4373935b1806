"""`python tests/slow_resize_local.py SECONDS ARGS...`: `image-pipeline local ARGS...` whose resize
function prints "resize started", sleeps SECONDS, does its work and prints "resize finished", so a
test can signal it while an invocation runs."""

import sys
import time

from pipeline.cli import main
from pipeline.local import runner, topology

SECONDS = float(sys.argv[1])
_functions = topology._lambda_functions


def _slow_functions():
    functions = _functions()
    resize = functions["resize"]

    def slow_resize(event, context):
        if not runner.event_keys(event):
            return resize(event, context)
        print("resize started", flush=True)
        time.sleep(SECONDS)
        try:
            return resize(event, context)
        finally:
            print("resize finished", flush=True)
    return {**functions, "resize": slow_resize}


topology._lambda_functions = _slow_functions
sys.exit(main(["local", *sys.argv[2:]]))
