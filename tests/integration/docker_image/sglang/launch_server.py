"""``python3 -m sglang.launch_server <flags>`` -> ``python3 -m pytest_autotuner.sim`` with the same argv.

Lives in the test image (and on PYTHONPATH for the process runtime's tests); the simulator itself comes from the
work tree. ``SIM_EXTRA_ARGS`` (space-separated) appends simulator flags, e.g. fault injection.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    extra = os.environ.get("SIM_EXTRA_ARGS", "").split()
    os.execv(sys.executable, [sys.executable, "-m", "pytest_autotuner.sim", *sys.argv[1:], *extra])
