"""The argument tables shipped for each SGLang version in ``core.spec.sglang_args.SHIPPED_VERSIONS``: one JSON per
version in this folder, generated from SGLang's own ``ServerArgs.add_cli_args`` (the ``server-args.json`` that
``.ci`` tooling dumps from an installed SGLang). Regenerate with

    python -m pytest_autotuner.sglang_tables <server-args.json>... <out dir>
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from pytest_autotuner.core.spec.sglang_args import SHIPPED_VERSIONS, ArgumentTable

__all__ = ["shipped_table"]


@functools.cache
def shipped_table(version: str) -> ArgumentTable:
    """The shipped table of SGLang ``version`` (one of ``SHIPPED_VERSIONS``)."""
    if version not in SHIPPED_VERSIONS:
        raise ValueError(f"no shipped argument table for SGLang {version}; shipped: {', '.join(SHIPPED_VERSIONS)}")
    text = resources.files(__name__).joinpath(f"{version}.json").read_text("utf-8")
    return ArgumentTable.from_json(json.loads(text), source=f"the shipped table of SGLang {version}")
