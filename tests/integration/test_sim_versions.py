"""The simulator imitates a stated SGLang version: exactly its flags, argparse's exit on others, the flags it
does not model listed, and its API in the shape of SGLang 0.5.23's own OpenAI schemas."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from processes import SimProcess

FAST = ["--sim-speedup", "20", "--sim-startup-scale", "0.02"]
SCHEMAS = json.loads((Path(__file__).parent.parent / "data" / "sglang-0.5.23" / "openai-schemas.json").read_text())


def validate(body: Any, schema_name: str) -> None:
    jsonschema.validate(body, SCHEMAS["schemas"][schema_name])


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """A 0.5.23 simulator given flags it accepts but does not model."""
    flags = ["--kv-cache-dtype", "nvfp4", "--sampling-backend", "pytorch", "--attention-backend", "torch_native"]
    process = SimProcess(tmp_path_factory.mktemp("sim"), *FAST, "--sim-sglang-version", "0.5.23", *flags)
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()


def test_unmodelled_flags_are_accepted_logged_and_reported(sim: SimProcess) -> None:
    info = sim.get_json("/get_server_info")
    assert info["version"] == "0.5.23-sim" and info["sim_sglang_version"] == "0.5.23"
    # torch_native has no kernel lane: priced as the default backend and said (triton would be priced on its lane)
    assert info["sim_unmodelled_flags"] == [
        "attention-backend=torch_native",
        "kv-cache-dtype=nvfp4",
        "sampling-backend",
    ]
    assert "not modelled by the simulator" in sim.stderr and "sampling-backend" in sim.stderr
    assert not any(key.startswith("unmodelled") for key in info)


def test_models_and_streamed_chunks_follow_sglangs_schemas(sim: SimProcess) -> None:
    validate(sim.get_json("/v1/models"), "ModelList")
    for path, body, schema in [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a b c"}]}, "ChatCompletionStreamResponse"),
        ("/v1/completions", {"prompt": "a b c"}, "CompletionStreamResponse"),
    ]:
        request = {"model": "m", "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}, **body}
        validate(request, schema.replace("StreamResponse", "Request"))  # our requests are SGLang's too
        status, raw = sim.post(path, request)
        assert status == 200
        # ": sim-time <t>" lines are SSE comments (server time): valid SSE, not chunks
        data = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
        assert data[-1] == "[DONE]" and len(data) >= 4
        for chunk in data[:-1]:
            validate(json.loads(chunk), schema)
        status, raw = sim.post(path, {**request, "stream": False})
        validate(json.loads(raw), schema.replace("Stream", ""))


@pytest.mark.parametrize(
    ("version", "flag", "accepted"),
    [("0.5.2", "--cuda-graph-max-bs", True), ("0.5.23", "--cuda-graph-max-bs", False),
     ("0.5.23", "--cuda-graph-max-bs-decode", True), ("0.5.2", "--cuda-graph-max-bs-decode", False)],
)  # fmt: skip
def test_each_version_accepts_exactly_its_own_flags(version: str, flag: str, accepted: bool) -> None:
    from pytest_autotuner.sim.cli import parse_argv

    argv = ["--model-path", "x", "--sim-sglang-version", version, flag, "8"]
    if accepted:
        assert parse_argv(argv).cuda_graph_max_bs == 8  # modelled under either name
        return
    proc = subprocess.run([sys.executable, "-m", "pytest_autotuner.sim", *argv], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert f"error: unrecognized arguments: {flag} 8" in proc.stderr
