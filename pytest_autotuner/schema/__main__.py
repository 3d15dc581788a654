"""Regenerate the shipped JSON Schema: ``python -m pytest_autotuner.schema``; with ``--tables FILE`` also write
every spec field as a markdown table (``docs/spec-fields.md``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pytest_autotuner.core.spec.task_spec import spec_json_schema
from pytest_autotuner.files import write_atomically
from pytest_autotuner.schema.tables import field_tables

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pytest_autotuner.schema")
    parser.add_argument("--tables", type=Path, metavar="FILE", help="also write the spec's fields as tables here")
    options = parser.parse_args()
    schema = spec_json_schema()
    target = Path(__file__).with_name("tuning-spec.schema.json")
    write_atomically(target, json.dumps(schema, indent=2) + "\n")
    print(f"wrote {target}")
    if options.tables is not None:
        write_atomically(options.tables, field_tables(schema))
        print(f"wrote {options.tables}")
