"""SGLang's argument tables: the help parser against both real help texts, the shipped tables, the checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_autotuner.core.spec.sglang_args import (
    DEFAULT_VERSION,
    SHIPPED_VERSIONS,
    check_argv,
    check_spec_flags,
    imitated_version,
    parse_help,
    table_from_actions,
    version_from_tag,
)
from pytest_autotuner.core.spec.spec_model import RangeParam
from pytest_autotuner.sglang_tables import shipped_table

DATA = Path(__file__).parent.parent / "data"


def reference(version: str) -> tuple[str, dict]:
    folder = DATA / f"sglang-{version}"
    return (folder / "launch_server-help.txt").read_text(), json.loads((folder / "server-args.json").read_text())


@pytest.mark.parametrize("version", SHIPPED_VERSIONS)
def test_the_help_parser_reads_what_argparse_itself_says(version: str) -> None:
    help_text, server_args = reference(version)
    parsed = parse_help(help_text, version)
    truth = table_from_actions(server_args["arguments"], version)
    by_name = {o.name: o for o in truth.options}
    assert len(parsed.options) >= len(truth.options) - 2  # 0.5.23 hides two options from its help
    for option in parsed.options:
        real = by_name[option.name]
        assert option.flags == real.flags
        assert (option.kind, option.negatable) == (real.kind, real.negatable), option.name
        assert (option.choices is None) == (real.choices is None), option.name
        if option.choices is not None:
            assert set(option.choices) == set(real.choices or ()), option.name


def test_the_help_parser_reads_kinds_choices_and_defaults() -> None:
    table = parse_help(reference("0.5.23")[0], "0.5.23")
    assert table.lookup("skip-tokenizer-init").kind == "flag"  # type: ignore[union-attr]
    tf32 = table.lookup("no-enable-tf32-matmul")
    assert tf32 is not None and tf32.negatable and tf32.name == "enable-tf32-matmul"
    tp = table.lookup("tensor-parallel-size")
    assert tp is not None and tp.name == "tp-size" and tp.kind == "value" and tp.type == ""  # help has no types
    assert table.lookup("numa-node").kind == "list"  # type: ignore[union-attr]
    policy = table.lookup("schedule-policy")
    assert policy is not None and policy.choices is not None and "shortest-prefill-first" in policy.choices
    assert sum(o.default is not None for o in table.options) > 10
    assert table.with_types_from(shipped_table("0.5.23")).lookup("tp-size").type == "int"  # type: ignore[union-attr]


def test_shipped_tables_are_the_real_option_counts() -> None:
    assert len(shipped_table("0.5.2").options) == 210  # 211 actions less --help
    assert len(shipped_table("0.5.23").options) == 531
    assert "cuda-graph-max-bs" in shipped_table("0.5.2") and "cuda-graph-max-bs" not in shipped_table("0.5.23")
    with pytest.raises(ValueError, match="no shipped argument table"):
        shipped_table("0.4.0")


def test_an_unknown_flag_names_itself_the_version_and_the_closest_options() -> None:
    problems = check_spec_flags(shipped_table("0.5.23"), {"cuda-graph-max-bs": [8, 16]})
    assert problems == [
        "--cuda-graph-max-bs is not an option of SGLang 0.5.23; closest: --cuda-graph-max-bs-decode, "
        "--cuda-graph-max-bs-prefill, --cuda-graph-bs-decode"
    ]
    assert check_spec_flags(shipped_table("0.5.2"), {"cuda-graph-max-bs": [8, 16]}) == []


def test_values_are_checked_against_choices_kinds_and_types() -> None:
    table = shipped_table("0.5.23")
    (bad_choice,) = check_spec_flags(table, {"schedule-policy": ["lpm", "fcfs", "bogus"]})
    assert "'bogus' is not one of its choices" in bad_choice and "lpm, random, fcfs, dfs-weight" in bad_choice
    (flag_value,) = check_spec_flags(table, {"enable-mixed-chunk": [True, 4]})
    assert "takes no value" in flag_value
    (not_int,) = check_spec_flags(table, {"max-running-requests": [16, "many"]})
    assert "takes an integer" in not_int and "'many'" in not_int
    (bool_for_value,) = check_spec_flags(table, {"mem-fraction-static": [0.8, True]})
    assert "takes a value" in bool_for_value
    assert check_spec_flags(table, {"mem-fraction-static": RangeParam(low=0.7, high=0.9)}) == []
    (float_range,) = check_spec_flags(table, {"tp-size": RangeParam(low=1.0, high=2.5)})
    assert "integer" in float_range
    (range_over_choices,) = check_spec_flags(table, {"kv-cache-dtype": RangeParam(low=1, high=2)})
    assert "range cannot fit" in range_over_choices
    assert check_spec_flags(table, {"kv-cache-dtype": ["auto", "fp8_e5m2"], "speculative-algorithm": ["EAGLE"]}) == []


def test_extra_arguments_are_checked_like_parameters() -> None:
    table = shipped_table("0.5.23")
    assert check_argv(table, ["--enable-metrics", "--attention-backend", "triton", "--numa-node", "0", "1"]) == []
    problems = check_argv(table, ["--cuda-graph-max-bs=8", "--attention-backend", "magic", "--tp-size"])
    assert len(problems) == 3
    assert "not an option" in problems[0] and "not one of its choices" in problems[1] and "needs a value" in problems[2]


def test_the_imitated_version_follows_the_image_tag_else_the_newest() -> None:
    assert version_from_tag("v0.5.2-cu126") == "0.5.2" and version_from_tag("lmsysorg/sglang:v0.5.23") == "0.5.23"
    assert version_from_tag("latest") is None and version_from_tag("v0.4.9") is None
    assert imitated_version(None, ["v0.5.2-cu126"]) == "0.5.2"
    assert imitated_version("0.5.23", ["v0.5.2-cu126"]) == "0.5.23"
    assert imitated_version(None, ["latest"]) == DEFAULT_VERSION == SHIPPED_VERSIONS[-1]
