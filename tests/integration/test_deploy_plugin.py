"""Deploy files through the plugin on the simulator: the report folder holds them and results.json links them;
recording a baseline commits them next to the spec; ``--autotune-check`` fails, naming the flag, when a committed
file no longer runs the baseline's configuration."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.slow


def spec() -> dict[str, object]:
    return {
        "task_name": "deployed-task",
        "model": {"id_or_path": "meta-llama/Llama-3.1-8B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [512, 2048], "dp-size": [1, 2]},
        "optimization": {"strategy": "bayesian", "max_iterations": 4, "n_initial_random": 2, "seed": 3,
                         "timeout_per_iteration": 60, "confirm_runs": 2},
        "benchmark": {"traffic_scenarios": ["D(64,32)"], "num_concurrency": [4, 8], "max_requests_per_iteration": 24,
                      "warmup_requests": 1},
        "simulator": {"speedup": 4, "startup_scale": 0.01, "num_gpus": 2},
        "regression": {"baseline_runs": 2},
        "cost": {"gpu_hour": {"h100": 2.5, "a100-80g": 1.2}, "source": "list price, test"},
    }  # fmt: skip


@pytest.fixture
def recorded(pytester: pytest.Pytester) -> Path:
    (pytester.path / "tuning_specs").mkdir()
    (pytester.path / "tuning_specs" / "deployed.json").write_text(json.dumps(spec()))
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", "--autotune-update-baseline")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*deployed-task: deploy files written to *deployed.deploy*",
            "*serving cost at $2.50 per h100 GPU-hour (list price, test): the best $*",
        ]
    )
    return pytester.path


def test_the_report_folder_holds_valid_deploy_files_linked_from_results(recorded: Path) -> None:
    folder = recorded / "reports" / "deployed-task"
    results = json.loads((folder / "results.json").read_text())
    deploy = results["deploy"]
    assert deploy["flag_problems"] == []
    assert sorted(deploy["files"]) == ["compose.yaml", "docker-run.sh", "kubernetes.yaml", "launch.sh"]
    for href in deploy["files"].values():
        assert (folder / href).is_file()
    best = results["best"]["params"]
    for flag, value in best.items():
        assert f"--{flag} {value}" in deploy["launch_command"]
    for document in yaml.safe_load_all((folder / "deploy" / "kubernetes.yaml").read_text()):
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    page = (folder / "index.html").read_text()
    assert 'href="deploy/kubernetes.yaml"' in page
    assert "Where a request's time goes: the best and SGLang's defaults" in page
    assert results["importance"]["trials"] <= 4 and results["importance"]["importances"] is None
    assert "not enough trials for parameter importance" in results["importance"]["warning"]
    cost = results["serving_cost"]
    assert cost["gpu_hour"] == 2.5 and cost["source"] == "list price, test"
    assert cost["best"][0]["per_million_output_tokens"] > 0
    assert cost["tuning_run"]["cost"] == pytest.approx(cost["tuning_run"]["gpu_hours"] * 2.5)
    cells = results["time_breakdown"]["cells"]
    assert sorted(c["cell"] for c in cells) == ["D(64,32) c=4", "D(64,32) c=8"]
    assert all(0 < c["best"]["waiting_and_prefill_share"] < 1 and c["best"]["mean_in_flight"] > 0 for c in cells)
    # the simulator says when each request's prefill started: queueing and prefill are told apart
    assert results["time_breakdown"]["source"].startswith("the server's per-request timings")
    for c in cells:
        best = c["best"]
        assert best["mean_queueing"] >= 0 and best["mean_prefill"] > 0
        parts = best["mean_queueing"] + best["mean_prefill"] + best["mean_decode"]
        assert parts == pytest.approx(best["mean_e2e"])
    versus = results["vs_defaults"]
    if versus["confirmation_runs"] and not versus["defaults_chosen"]:  # SGLang's defaults, side by side
        assert all(c["defaults"]["mean_e2e"] > 0 for c in cells)
        assert [d["cell"] for d in cost["defaults"]] == [b["cell"] for b in cost["best"]]


def test_a_check_passes_while_the_committed_files_match(pytester: pytest.Pytester, recorded: Path) -> None:
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", "--autotune-check")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*deploy files in tuning_specs/deployed.deploy match the baseline's configuration"])


def test_a_changed_flag_in_a_committed_file_fails_the_check_naming_it(
    pytester: pytest.Pytester, recorded: Path
) -> None:
    path = recorded / "tuning_specs" / "deployed.deploy" / "compose.yaml"
    service = next(iter(yaml.safe_load(path.read_text())["services"].values()))
    command = service["command"]
    at = command.index("--chunked-prefill-size") + 1
    changed = {"512": "2048", "2048": "512"}[command[at]]
    path.write_text(path.read_text().replace(f"- --chunked-prefill-size\n    - '{command[at]}'",
                                             f"- --chunked-prefill-size\n    - '{changed}'"))  # fmt: skip
    result = pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider", "--autotune-check")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*the committed deploy files in tuning_specs/deployed.deploy no longer run the baseline's configuration*",
            f"*tuning_specs/deployed.deploy/compose.yaml: --chunked-prefill-size is {changed}, the baseline's "
            f"configuration has {command[at]}*",
        ]
    )
    assert "trial #" not in result.stdout.str()
