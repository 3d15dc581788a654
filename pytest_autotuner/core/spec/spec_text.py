"""The text of a spec file: bounded JSON/YAML parsing, and previews and error messages bounded the same way.

Specs are edited by anyone and run unattended, so nothing here builds more than it bounds: a file is at most
``MAX_SPEC_BYTES``; a YAML document's expanded size (aliases counted at every use) at most ``MAX_EXPANDED_SIZE``
and its nesting at most ``MAX_DEPTH``, checked on the node graph before any object is built; duplicate keys are
errors in JSON and YAML. Error messages show a value only through ``preview``, which never serialises more than
it prints. What the document means is ``task_spec.py``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

__all__ = ["AT", "MAX_DEPTH", "MAX_EXPANDED_SIZE", "MAX_SPEC_BYTES", "SpecError", "cut", "format_errors", "preview",
           "read_document"]  # fmt: skip

AT = "\x00"  # brackets a parameter name inside a validator message, so the error names its path
MAX_SPEC_BYTES = 256 * 1024  #: a spec file's size
MAX_EXPANDED_SIZE = 200_000  #: a YAML document expanded: one per node plus one per character of a scalar
MAX_DEPTH = 32  #: nesting of lists and mappings


class SpecError(ValueError):
    """A spec file that cannot be used; the message is meant for the user as is."""


def read_document(path: Path, data: bytes) -> dict[str, Any]:
    """The JSON or YAML object in ``data`` (a spec file's bytes; ``path`` names it in errors), bounded in size,
    expansion and depth. Raises SpecError with a user-facing message."""
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: the spec is over {MAX_SPEC_BYTES // 1024} KiB; a tuning spec is a short file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SpecError(
            f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); save the spec as UTF-8"
        ) from None
    raw = _parse_text(path, text.removeprefix("\ufeff"))
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a tuning spec must be a JSON/YAML object, got {type(raw).__name__}")
    _check_depth(path, raw)
    return raw


def cut(text: str, limit: int) -> str:
    """``text`` with control characters escaped, cut to about ``limit`` characters."""
    text = text[: limit + 1].encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def preview(value: Any, limit: int = 120) -> str:
    """A short JSON-like rendering of ``value`` that never builds more than about ``limit`` characters.

    ``json.dumps(value)[:limit]`` would serialise the whole value first: an expanded alias bomb is gigabytes.
    """
    out: list[str] = []
    budget = [limit]

    def emit(text: str) -> bool:
        out.append(text[: budget[0]])
        budget[0] -= len(text)
        return budget[0] > 0

    def walk(item: Any, depth: int) -> bool:
        if depth > 8:
            return emit("...")
        if isinstance(item, dict):
            if not emit("{"):
                return False
            for i, (key, sub) in enumerate(item.items()):
                if (i and not emit(", ")) or not walk(key, depth + 1) or not emit(": ") or not walk(sub, depth + 1):
                    return False
            return emit("}")
        if isinstance(item, (list, tuple)):
            if not emit("["):
                return False
            for i, sub in enumerate(item):
                if (i and not emit(", ")) or not walk(sub, depth + 1):
                    return False
            return emit("]")
        if isinstance(item, str):
            return emit(json.dumps(item[: budget[0] + 1]))
        if isinstance(item, bool) or item is None:
            return emit(json.dumps(item))
        if isinstance(item, int) and abs(item) >= 10**30:
            return emit(f"<an integer of about {int(item.bit_length() * 0.30103) + 1} digits>")
        if isinstance(item, (int, float)):
            return emit(repr(item))
        return emit(cut(repr(item)[: budget[0] + 1], budget[0] + 1))

    if walk(value, 0):
        return "".join(out)
    return "".join(out)[: max(limit - 3, 0)] + "..."


_UNION_MISMATCH = {"list_type", "model_type", "model_attributes_type", "dict_type"}


def format_errors(path: Path, err: ValidationError) -> str:
    problems: list[str] = []
    errors = err.errors()[:40]
    # pydantic reports union members as extra path segments: keep the data path only
    members = {"RangeParam", "mean", "percentiles", "bool", "int", "float", "str"}
    locs = [
        [
            cut(str(p), 60)
            for p in item["loc"]
            if str(p) not in members and not str(p).startswith(("list[", "function-", "constrained-"))
        ]
        for item in errors
    ]
    for item, loc in zip(errors, locs, strict=True):
        if item["type"] in _UNION_MISMATCH and any(
            other_item["type"] not in _UNION_MISMATCH and other[: len(loc)] == loc
            for other_item, other in zip(errors, locs, strict=True)
        ):
            continue  # "not a list" next to the range's own errors: the value was meant as the other member
        msg = item["msg"].removeprefix("Value error, ")
        named = msg.startswith(AT)
        if named:
            name, _, msg = msg[1:].partition(AT)
            loc.append(name)
        field = ".".join(loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling against the spec format (see the JSON Schema)"
        elif item["type"] == "missing":
            msg = "required field is missing"
        elif item["type"] == "finite_number":
            msg = "must be a finite number (not NaN or infinity)"
        value = item.get("input")
        scalar = isinstance(value, (int, float, str)) and not isinstance(value, bool)
        quiet = named or item["type"] == "missing" or "got " in msg or (loc[:1] == ["parameters"] and not scalar)
        shown = "" if quiet else f" (got {preview(value)})"
        line = f"  `{field}`: {cut(msg, 400)}{shown}"
        if line not in problems:
            problems.append(line)
    count = len(problems) + max(err.error_count() - 40, 0)
    lines = [f"{path}: invalid tuning spec ({count} problem{'s' * (count > 1)})", *problems[:20]]
    if count > 20:
        lines.append(f"  ... and {count - 20} more")
    return "\n".join(lines)


class _DuplicateKey(ValueError):
    def __init__(self, key: object, where: str = "") -> None:
        super().__init__(key)
        self.key = key
        self.where = where


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _duplicate_message(path: Path, err: _DuplicateKey) -> str:
    return (
        f"{path}{err.where}: duplicate key {preview(err.key, 60)}; each key may appear once in an object "
        "(otherwise the last one would silently win)"
    )


def _parse_text(path: Path, text: str) -> Any:
    if path.suffix in (".yaml", ".yml"):
        return _parse_yaml(path, text)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as err:
        raise SpecError(_duplicate_message(path, err)) from None
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}") from None
    except RecursionError:
        raise SpecError(f"{path}: the spec is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as err:  # e.g. an integer literal of thousands of digits
        raise SpecError(f"{path}: not valid JSON: {cut(str(err), 200)}") from None


def _parse_yaml(path: Path, text: str) -> Any:
    """YAML through the safe loader, with the expanded size, nesting and duplicate keys checked on the node graph
    before any Python object is built (an alias bomb is a few hundred bytes of nodes shared many times)."""
    import yaml

    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_nodes(path, node)
        return loader.construct_document(node)
    except SpecError:
        raise
    except yaml.YAMLError as err:
        if "nesting depth" in str(err):  # PyYAML 6.0.4's own limit, met before ours on the node graph
            raise SpecError(f"{path}: the spec is nested too deeply (at most {MAX_DEPTH} levels)") from None
        raise SpecError(f"{path}: not valid YAML: {cut(str(err), 400)}") from None
    except _DuplicateKey as err:
        raise SpecError(_duplicate_message(path, err)) from None
    except RecursionError:
        raise SpecError(f"{path}: the spec is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as err:  # e.g. an integer of thousands of digits
        raise SpecError(f"{path}: cannot read a YAML value: {cut(str(err), 200)}") from None
    finally:
        loader.dispose()


def _check_yaml_nodes(path: Path, root: Any) -> None:
    """Expanded size (memoised per node, so shared aliases cost nothing to count), nesting depth, cycles and
    duplicate mapping keys of a composed YAML document."""
    import yaml

    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > MAX_DEPTH:
            raise SpecError(f"{path}:{node.start_mark.line + 1}: the spec is nested more than {MAX_DEPTH} levels")
        if id(node) in active:
            raise SpecError(f"{path}:{node.start_mark.line + 1}: an alias refers to itself (a recursive document)")
        active.add(id(node))
        total = 1
        if isinstance(node, yaml.ScalarNode):
            total += len(node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if (key.tag, key.value) in seen:
                        raise _DuplicateKey(key.value, f":{key.start_mark.line + 1}")
                    seen.add((key.tag, key.value))
                total += size(key, depth + 1) + size(value, depth + 1)
                if total > MAX_EXPANDED_SIZE:
                    break
        active.discard(id(node))
        if total > MAX_EXPANDED_SIZE:
            raise SpecError(
                f"{path}:{node.start_mark.line + 1}: the document expands to more than {MAX_EXPANDED_SIZE:,} "
                "nodes and characters (YAML aliases repeat what they refer to); a tuning spec is small"
            )
        sizes[id(node)] = total
        return total

    size(root, 0)


def _check_depth(path: Path, raw: Any) -> None:
    """Lists and mappings nested at most MAX_DEPTH deep (iterative: the check itself cannot overflow)."""
    stack = [(raw, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH:
            raise SpecError(f"{path}: the spec is nested more than {MAX_DEPTH} levels")
        if seen > 4 * MAX_EXPANDED_SIZE:
            raise SpecError(f"{path}: the spec holds too many values")
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
