"""A spec's study opens in optuna-dashboard: the journal file our plugin writes loads with optuna-dashboard's own
storage loader (the one its command line uses for `optuna-dashboard reports/<spec>/study.journal`)."""

from __future__ import annotations

import json
import os

import optuna
import pytest

pytestmark = pytest.mark.slow


def storage_loader() -> object:
    try:
        from optuna_dashboard._storage_url import get_storage
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("optuna-dashboard is required under CI (pip install -e '.[dev]')")
        pytest.skip("optuna-dashboard is not installed (pip install -e '.[dev]')")
    return get_storage


def test_a_specs_study_journal_loads_with_optuna_dashboards_storage_loader(pytester: pytest.Pytester) -> None:
    get_storage = storage_loader()
    folder = pytester.path / "tuning_specs"
    folder.mkdir()
    spec = {
        "task_name": "dash-task",
        "model": {"id_or_path": "meta-llama/Llama-3.2-1B-Instruct"},
        "runtime": "sim",
        "parameters": {"chunked-prefill-size": [512, 2048]},
        "optimization": {"strategy": "grid", "max_iterations": 2, "timeout_per_iteration": 60, "confirm_runs": 1},
        "benchmark": {"traffic_scenarios": ["D(64,32)"], "num_concurrency": [2], "max_requests_per_iteration": 8,
                      "warmup_requests": 0},
        "simulator": {"speedup": 4, "startup_scale": 0.01},
    }  # fmt: skip
    (folder / "dash.json").write_text(json.dumps(spec))
    pytester.runpytest_subprocess("--autotune", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    journal = pytester.path / "reports" / "dash-task" / "study.journal"
    assert journal.is_file()

    storage = get_storage(str(journal))  # type: ignore[operator]  # what `optuna-dashboard <file>` does
    summaries = optuna.get_all_study_summaries(storage)
    assert len(summaries) == 1
    study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2
    assert {t.params["chunked-prefill-size"] for t in trials} == {512, 2048}
    assert all("objective" in t.user_attrs for t in trials)
