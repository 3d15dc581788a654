"""SGLang's own argument table: which launch flags a given SGLang accepts, and whether a spec's values fit them.

Flags move between SGLang releases (``--cuda-graph-max-bs`` of 0.5.2 is ``--cuda-graph-max-bs-decode`` in
0.5.23), and argparse rejects an unknown one only when a server starts, a GPU launch per trial. A runtime reads
the table of the server it will run once per session (``RuntimeHost.argument_table()``: the image's
``--help`` for Docker, the host's for the process runtime, a shipped table for the simulator) and
``check_spec_flags`` checks every tuned parameter and extra argument against it before the first launch.

- ``parse_help(text)``: argparse help -> ``ArgumentTable`` (options, value kinds, choices, defaults the help
  shows). Help does not say a value's type (int, float); ``ArgumentTable.with_types_from`` borrows it from a
  shipped table of the same options.
- ``table_from_actions``: a table from SGLang's own ``ServerArgs.add_cli_args`` (the shipped tables, one JSON per
  version, are read at the edge: ``pytest_autotuner.sglang_tables.shipped_table``).
- ``imitated_version(...)``: the version the simulator imitates for a spec.

Pure: no file, process, network or edge import.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DEFAULT_VERSION",
    "SHIPPED_VERSIONS",
    "ArgumentTable",
    "Option",
    "check_argv",
    "check_spec_flags",
    "check_value",
    "imitated_version",
    "parse_help",
    "table_from_actions",
    "version_from_tag",
]

#: Versions with a shipped table, oldest first; the newest is the simulator's default.
SHIPPED_VERSIONS = ("0.5.2", "0.5.23")
DEFAULT_VERSION = SHIPPED_VERSIONS[-1]

Kind = Literal["flag", "value", "optional", "list"]
_NUMERIC = {"int": int, "float": float, "human_readable_int": int}


@dataclass(frozen=True)
class Option:
    """One launch option.

    ``kind``: ``flag`` takes no value (store-true, or ``--x/--no-x`` when ``negatable``), ``value`` one value,
    ``optional`` zero or one, ``list`` one or more (nargs). ``type``: the converter's name where known (``int``,
    ``float``, ``str``, ...; ``""`` from help text, which does not show it).
    """

    flags: tuple[str, ...]  # every option string, e.g. ("--tp-size", "--tensor-parallel-size")
    kind: Kind
    choices: tuple[str, ...] | None = None
    type: str = ""
    default: str | None = None
    negatable: bool = False

    @property
    def name(self) -> str:
        """The first long option string without its dashes (``tp-size``)."""
        long = [f for f in self.flags if f.startswith("--")]
        return (long or list(self.flags))[0].lstrip("-")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.lstrip("-") for f in self.flags if f.startswith("--"))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"flags": list(self.flags), "kind": self.kind}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.type:
            out["type"] = self.type
        if self.default is not None:
            out["default"] = self.default
        if self.negatable:
            out["negatable"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Option:
        choices = data.get("choices")
        return cls(
            flags=tuple(data["flags"]),
            kind=data["kind"],
            choices=None if choices is None else tuple(str(c) for c in choices),
            type=str(data.get("type", "")),
            default=data.get("default"),
            negatable=bool(data.get("negatable", False)),
        )


@dataclass(frozen=True)
class ArgumentTable:
    """The options one SGLang accepts; ``version`` names it in every error ("" where unknown)."""

    version: str
    options: tuple[Option, ...]
    source: str = ""  # where it came from, for messages: "shipped table", "--help of <image>", ...

    @functools.cached_property
    def _by_name(self) -> dict[str, Option]:
        return {name: option for option in self.options for name in option.names}

    def lookup(self, name: str) -> Option | None:
        """The option for ``name`` (``tp-size``, ``--tp-size`` or a ``--no-x`` form of a negatable flag)."""
        bare = name.lstrip("-")
        return self._by_name.get(bare)

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.lookup(name) is not None

    def closest(self, name: str, n: int = 3) -> list[str]:
        """The real options nearest to ``name``: those that extend it first, then difflib's closest matches."""
        bare = name.lstrip("-")
        extending = sorted(o for o in self._by_name if o.startswith(bare) and o != bare)
        close = difflib.get_close_matches(bare, list(self._by_name), n=n + len(extending), cutoff=0.6)
        out: list[str] = []
        for candidate in [*extending, *close]:
            if candidate not in out:
                out.append(candidate)
        return out[:n]

    def described(self) -> str:
        return f"SGLang {self.version or '(version unknown)'}"

    def unknown_message(self, name: str) -> str:
        near = self.closest(name)
        hint = f"; closest: {', '.join('--' + n for n in near)}" if near else ""
        return f"--{name.lstrip('-')} is not an option of {self.described()}{hint}"

    def with_types_from(self, other: ArgumentTable) -> ArgumentTable:
        """This table with value types (which help text does not show) taken from ``other`` where it has them."""
        options = []
        for option in self.options:
            known = other.lookup(option.name)
            if not option.type and known is not None and known.kind == option.kind and known.type:
                option = dataclasses.replace(option, type=known.type)
            options.append(option)
        return dataclasses.replace(self, options=tuple(options))

    def extended(self, options: Iterable[Option]) -> ArgumentTable:
        """This table plus ``options`` (a runtime's own flags, e.g. the simulator's ``--sim-*``)."""
        return dataclasses.replace(self, options=(*self.options, *options))

    def as_json(self) -> dict[str, Any]:
        return {"sglang_version": self.version, "options": [o.as_dict() for o in self.options]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "") -> ArgumentTable:
        return cls(str(data.get("sglang_version", "")), tuple(Option.from_dict(o) for o in data["options"]), source)


# -- argparse help ------------------------------------------------------------------------------------------

_HEADER = re.compile(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$")
_DEFAULT = re.compile(r"\(default:\s*([^)]*)\)|\b[Dd]efault(?: is|:)\s+['\"`]?([\w.+-]+)")


def _kind_of(args: str) -> tuple[Kind, tuple[str, ...] | None]:
    args = args.strip()
    if not args:
        return "flag", None
    if args.startswith("[") and "..." not in args:
        return "optional", _choices(args.strip("[]"))
    if "..." in args or " " in args:
        return "list", _choices(args.split()[0].lstrip("["))
    return "value", _choices(args)


def _choices(token: str) -> tuple[str, ...] | None:
    if token.startswith("{") and token.endswith("}"):
        return tuple(token[1:-1].split(","))
    return None


def parse_help(text: str, version: str = "", source: str = "--help") -> ArgumentTable:
    """The options of an argparse ``--help`` text: option strings, kinds, choices and defaults the help states."""
    options: list[Option] = []
    current: dict[str, Any] | None = None
    help_lines: list[str] = []

    def close() -> None:
        if current is None:
            return
        found = _DEFAULT.search(" ".join(" ".join(help_lines).split()))
        if found:
            current["default"] = (found.group(1) or found.group(2) or "").strip()
        options.append(Option(**current))

    for line in text.splitlines():
        match = _HEADER.match(line)
        if match is None:
            if current is not None and line.startswith(" " * 4):
                help_lines.append(line.strip())
            elif current is not None and line.strip() and not line.startswith(" "):
                close()  # a group title ends the option before it
                current = None
            continue
        close()
        invocation, first_help = match.group(1), match.group(2) or ""
        parts = re.split(r", (?=-)", invocation)
        flags: list[str] = []
        kind: Kind = "flag"
        choices: tuple[str, ...] | None = None
        for part in parts:
            flag, _, args = part.partition(" ")
            flags.append(flag)
            kind, choices = _kind_of(args)
        long = {f for f in flags if f.startswith("--")}
        negatable = kind == "flag" and any(f.startswith("--no-") and "--" + f[5:] in long for f in long)
        current = {"flags": tuple(flags), "kind": kind, "choices": choices, "negatable": negatable}
        help_lines = [first_help] if first_help else []
    close()
    return ArgumentTable(version, tuple(o for o in options if "--help" not in o.flags), source)


def help_version(text: str) -> str:
    """A version the help text states (SGLang's does not; a wrapper may), else ""."""
    found = re.search(r"\bsglang[ =v-]+(\d+\.\d+\.\d+)", text, re.I)
    return found.group(1) if found else ""


# -- tables from argparse itself ----------------------------------------------------------------------------


def table_from_actions(actions: Iterable[Any], version: str, source: str = "") -> ArgumentTable:
    """A table from argparse actions (``parser._actions``, or their JSON dump in ``server-args.json``)."""
    options = []
    for action in actions:
        if isinstance(action, Mapping):
            flags, nargs, action_name = action["flags"], action.get("nargs"), str(action.get("action", ""))
            type_name, choices, default = action.get("type"), action.get("choices"), action.get("default")
        else:
            flags, nargs, action_name = action.option_strings, action.nargs, type(action).__name__
            converter = action.type
            type_name = getattr(converter, "__name__", None) if converter is not None else None
            choices, default = action.choices, action.default
        if not flags or "--help" in flags:
            continue
        kind: Kind
        if nargs == 0:
            kind = "flag"
        elif nargs == "?":
            kind = "optional"
        elif nargs in ("+", "*") or (isinstance(nargs, int) and nargs > 1):
            kind = "list"
        else:
            kind = "value"
        simple_default = default if isinstance(default, (str, int, float, bool)) and default != "==SUPPRESS==" else None
        options.append(
            Option(
                flags=tuple(flags),
                kind=kind,
                choices=None if choices is None else tuple(str(c) for c in choices),
                type=str(type_name or ("str" if kind != "flag" else "")),
                default=None if simple_default is None else str(simple_default),
                negatable="BooleanOptional" in action_name,
            )
        )
    return ArgumentTable(version, tuple(options), source)


def version_from_tag(reference: str) -> str | None:
    """The shipped version an image tag names (``v0.5.2-cu126`` -> ``0.5.2``), else None."""
    tag = reference.rsplit(":", 1)[-1] if ":" in reference.rsplit("/", 1)[-1] else reference
    found = re.match(r"^v?(\d+\.\d+\.\d+)(?:\D|$)", tag)
    return found.group(1) if found and found.group(1) in SHIPPED_VERSIONS else None


def imitated_version(explicit: str | None, image_references: Sequence[str] = ()) -> str:
    """The SGLang the simulator imitates: ``explicit``, else the one the spec's image names, else the newest."""
    if explicit:
        return explicit
    for reference in image_references:
        version = version_from_tag(reference)
        if version:
            return version
    return DEFAULT_VERSION


# -- checking values --------------------------------------------------------------------------------------


def _is_number(value: object, converter: type) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return converter is float or float(value).is_integer()
    try:
        converter(str(value))
    except ValueError:
        return False
    return True


def check_value(option: Option, value: object, table: ArgumentTable, shown: str = "") -> str | None:
    """Why ``value`` (a spec's parameter value) is not valid for ``option``, or None when it is."""
    flag = f"--{option.name}"
    where = f" ({table.described()})"
    if option.kind == "flag":
        if isinstance(value, bool):
            return None
        return f"{flag} is a flag that takes no value{where}: use true or false, not {value!r}"
    if isinstance(value, bool):
        return f"{flag} takes a value{where}; true/false would pass the flag bare or drop it, got {value!r}"
    if option.choices is not None:
        text = str(value)
        if text not in option.choices and not (option.kind == "list" and set(text.split()) <= set(option.choices)):
            return f"{flag} {value!r} is not one of its choices{where}: {', '.join(option.choices)}"
    converter = _NUMERIC.get(option.type)
    if converter is not None:
        items = str(value).split() if option.kind == "list" else [value]
        if not all(_is_number(item, converter) for item in items):
            return f"{flag} takes {'an integer' if converter is int else 'a number'}{where}, got {value!r}"
    return None


def check_spec_flags(table: ArgumentTable, parameters: Mapping[str, Any], extra_args: Sequence[str] = ()) -> list[str]:
    """Every problem of a spec's ``parameters`` (name -> list of values, or a range with ``low``/``high``/
    ``is_int``) and ``extra_args`` (argv tokens) against ``table``: one message per problem, [] when all fit."""
    problems: list[str] = []
    for name, values in parameters.items():
        option = table.lookup(name)
        if option is None:
            problems.append(table.unknown_message(name))
            continue
        if isinstance(values, (list, tuple)):
            candidates: list[object] = list(values)
        else:  # a range
            if option.kind == "flag" or option.choices is not None:
                what = "a flag" if option.kind == "flag" else f"one of {', '.join(option.choices or ())}"
                problems.append(f"--{option.name} takes {what} ({table.described()}); a numeric range cannot fit it")
                continue
            if option.type == "int" and not getattr(values, "is_int", True):
                problems.append(f"--{option.name} takes an integer ({table.described()}); the range is of floats")
                continue
            candidates = [values.low, values.high]
        for value in candidates:
            problem = check_value(option, value, table)
            if problem:
                problems.append(problem)
    problems += check_argv(table, extra_args)
    return problems


def check_argv(table: ArgumentTable, argv: Sequence[str]) -> list[str]:
    """Problems of literal arguments (``--flag value`` or ``--flag=value``) against ``table``."""
    problems: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("--"):
            problems.append(f"{token!r} in the extra arguments is not an option (a value without its flag?)")
            continue
        name, eq, inline = token[2:].partition("=")
        option = table.lookup(name)
        if option is None:
            problems.append(table.unknown_message(name))
            if not eq:
                while i < len(argv) and not argv[i].startswith("--"):
                    i += 1
            continue
        if option.kind == "flag":
            if eq:
                problems.append(f"--{option.name} is a flag that takes no value ({table.described()}): {token!r}")
            continue
        values = [inline] if eq else []
        while not eq and i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
            if option.kind != "list":
                break
        if not values and option.kind in ("value", "list"):
            problems.append(f"--{option.name} needs a value ({table.described()})")
            continue
        for value in values:
            problem = check_value(dataclasses.replace(option, kind="value"), value, table)
            if problem:
                problems.append(problem)
    return problems
