"""Regenerate the shipped JSON Schema: ``python -m pytest_autotuner.schema``."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_autotuner.core.spec import spec_json_schema

if __name__ == "__main__":
    target = Path(__file__).with_name("tuning-spec.schema.json")
    target.write_text(json.dumps(spec_json_schema(), indent=2) + "\n")
    print(f"wrote {target}")
