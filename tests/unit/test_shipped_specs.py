"""The shipped specs are valid for the SGLang their images name, and the seed's task fits the runner it is on."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_autotuner.core.search.space import SearchSpace
from pytest_autotuner.core.search.study import Search, study_name_for
from pytest_autotuner.core.spec.sglang_args import imitated_version
from pytest_autotuner.inputs import load_spec
from pytest_autotuner.runtimes import flag_problems
from pytest_autotuner.sglang_tables import shipped_table

SPECS = sorted((Path(__file__).parents[2] / "tuning_specs").glob("*.json"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_fits_the_sglang_its_image_names(path: Path) -> None:
    spec = load_spec(path)
    version = imitated_version(spec.simulator.sglang_version, [spec.docker.image or "", spec.runtime_image_tag])
    table = shipped_table(version)
    assert flag_problems(spec, spec.runtime, table) == ""
    if spec.runtime_image_tag.startswith("v0.5.2-"):
        assert version == "0.5.2"  # the seed's image tag


def test_the_seed_task_spends_no_trial_on_tp_size_2_on_one_gpu() -> None:
    spec = load_spec(Path(__file__).parents[2] / "tuning_specs" / "llama-3.2-1b-bayesian.json")
    space = SearchSpace.from_spec(spec)
    search = Search(spec=spec, space=space, storage=None, study_name=study_name_for(spec, "sim"), seed=0, max_gpus=1)
    assert search.unhostable_note() == "tp-size=2 needs 2 GPUs; this runner has 1: skipped"
    proposed = []
    for _ in range(12):
        proposal = search.propose(budget=30)
        assert proposal is not None
        proposed.append(proposal.params)
        search.study.tell(proposal.trial, 1.0)
    assert all(p.get("tp-size", 1) == 1 for p in proposed)
    assert search.n_evaluated == 12  # closed unhostable proposals are not evaluations
