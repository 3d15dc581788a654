"""``python3 -m sglang.launch_server <flags>`` -> ``python3 -m pytest_autotuner.sim`` with the same argv.

Lives in the test image only; the simulator itself comes from the host's work tree, mounted read-only.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "pytest_autotuner.sim", *sys.argv[1:]])
