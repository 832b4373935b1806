"""`python tests/slow_resize_local.py SECONDS ARGS...`: `image-pipeline local ARGS...` whose resize
function prints "resize started" and sleeps SECONDS before each upload's work, so a test can
signal it while an invocation runs."""

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
        if runner.event_keys(event):
            print("resize started", flush=True)
            time.sleep(SECONDS)
        return resize(event, context)
    return {**functions, "resize": slow_resize}


topology._lambda_functions = _slow_functions
sys.exit(main(["local", *sys.argv[2:]]))
