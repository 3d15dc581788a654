"""python -m pytest_autotuner.sglang_tables <server-args.json>... <out dir>: write the table of the SGLang version
each ``server-args.json`` describes into ``out dir`` (see the package docstring)."""

from __future__ import annotations

import json
import sys

from pytest_autotuner.core.spec.sglang_args import table_from_actions


def generate(server_args_json: str, out_dir: str) -> None:
    """Write the shipped table of the version a ``server-args.json`` describes into ``out_dir``."""
    with open(server_args_json, encoding="utf-8") as file:
        data = json.load(file)
    table = table_from_actions(data["arguments"], str(data["sglang_version"]))
    path = f"{out_dir}/{table.version}.json"
    with open(path, "w", encoding="utf-8") as file:
        json.dump(table.as_json(), file, separators=(",", ":"))
        file.write("\n")
    print(f"{path}: {len(table.options)} options")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    *sources, out = argv
    for source in sources:
        generate(source, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
