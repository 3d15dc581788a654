"""``python3 -m sglang.launch_server <flags>`` -> ``python3 -m pytest_autotuner.sim`` with the same argv.

Lives in the test image (and on PYTHONPATH for the process runtime's tests); the simulator itself comes from the
work tree. ``--help`` prints the real help text of SGLang 0.5.23 (copied next to this file by build.sh; on the
host, read from tests/data), as a preflight sees it in a real image, and the simulator imitates that version.
``SIM_EXTRA_ARGS`` (space-separated) appends simulator flags, e.g. fault injection.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SGLANG_VERSION = "0.5.23"
_HELP_NAMES = ("launch_server-help.txt", f"../../../data/sglang-{SGLANG_VERSION}/launch_server-help.txt")

if __name__ == "__main__":
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        here = Path(__file__).resolve().parent
        help_file = next(here / name for name in _HELP_NAMES if (here / name).exists())
        sys.stdout.write(help_file.read_text())
        sys.exit(0)
    extra = os.environ.get("SIM_EXTRA_ARGS", "").split()
    argv = [sys.executable, "-m", "pytest_autotuner.sim", "--sim-sglang-version", SGLANG_VERSION]
    os.execv(sys.executable, [*argv, *sys.argv[1:], *extra])
