"""Every spec field as a table, from the shipped JSON Schema: ``python -m pytest_autotuner.schema --tables FILE``.

One section per object of the spec (the top level first, then each nested object in the order first referenced),
one row per field: its type (a nested object links to its section), its default, its limits, its description.
Generated, so the tables cannot drift from what the spec accepts (a test compares ``docs/spec-fields.md`` with
this output).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["field_tables"]

_LIMITS = (
    ("minimum", ">= {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "<= {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
    ("minProperties", "at least {} entries"),
    ("maxProperties", "at most {} entries"),
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _anchor(name: str) -> str:
    return name.lower()


def _type(node: dict[str, Any], refs: list[str]) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        if name not in refs:
            refs.append(name)
        return f"[{name}](#{_anchor(name)})"
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "anyOf" in node:
        parts = [_type(option, refs) for option in node["anyOf"]]
        return " or ".join(dict.fromkeys(parts))
    kind = node.get("type")
    if kind == "array":
        items = node.get("items")
        return f"list of {_type(items, refs)}" if isinstance(items, dict) and items else "list"
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict) and values:
            return f"map of {_type(values, refs)}"
        return "object"
    if isinstance(kind, list):
        return " or ".join(kind)
    return str(kind or "any")


def _limits(node: dict[str, Any]) -> str:
    found = [text.format(json.dumps(node[key])) for key, text in _LIMITS if key in node]
    for option in node.get("anyOf", []):
        found += [text.format(json.dumps(option[key])) for key, text in _LIMITS if key in option]
    return ", ".join(dict.fromkeys(found))


def _table(name: str, obj: dict[str, Any], refs: list[str]) -> list[str]:
    lines = [f"## {name}", ""]
    if obj.get("description"):
        lines += [_cell(obj["description"]), ""]
    required = set(obj.get("required", []))
    lines += ["| field | type | default | limits | description |", "|---|---|---|---|---|"]
    for field, node in obj.get("properties", {}).items():
        default = "required" if field in required else (f"`{json.dumps(node['default'])}`" if "default" in node else "")
        row = [f"`{field}`", _type(node, refs), default, _limits(node), node.get("description", "")]
        lines.append("| " + " | ".join(_cell(part) for part in row) + " |")
    return [*lines, ""]


def field_tables(schema: dict[str, Any]) -> str:
    """The markdown page of every object's fields."""
    defs: dict[str, Any] = schema.get("$defs", {})
    refs: list[str] = []
    lines = [
        "# Spec fields",
        "",
        "Every field a tuning spec accepts, generated from the shipped JSON Schema "
        "(`python -m pytest_autotuner.schema --tables docs/spec-fields.md`). What the fields do together, with "
        "examples: [spec.md](spec.md).",
        "",
        *_table("Spec", schema, refs),
    ]
    done: set[str] = set()
    while len(done) < len(refs):
        name = next(r for r in refs if r not in done)
        done.add(name)
        lines += _table(name, defs[name], refs)
    return "\n".join(lines).rstrip("\n") + "\n"
