"""The simulator as a process: startup, HTTP API and stream format, failures and fault injection."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import SimProcess

# Fast sessions: tiny startups and a high speed-up, except where the test is about timing.
FAST = ["--sim-speedup", "20", "--sim-startup-scale", "0.02"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """One fast server for the tests that inject no faults and change no state."""
    sim = SimProcess(tmp_path_factory.mktemp("sim"), *FAST, "--served-model-name", "tiny")
    try:
        sim.wait_ready()
        yield sim
    finally:
        sim.kill()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    started: list[SimProcess] = []

    def start(*flags: str, model: str = "meta-llama/Llama-3.2-1B-Instruct") -> SimProcess:
        sim = SimProcess(tmp_path, *flags, model=model)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.kill()


def _events(raw: bytes) -> list[Any]:
    lines = [line for line in raw.decode().split("\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]) for line in lines]


CHAT = {
    "model": "m",
    "messages": [{"role": "user", "content": "one two three four five"}],
    "max_tokens": 4,
    "ignore_eos": True,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def test_health_is_503_during_startup_then_200_and_logs_follow_sglang(launch: Any) -> None:
    sim = launch("--sim-speedup", "10", "--sim-startup-scale", "1")  # 1B: ~15 simulated s -> 1.5 s wall
    assert sim.wait_listening() == 503
    sim.wait_ready()
    log = sim.stderr
    order = [
        "server_args=ServerArgs(",
        "Load weight begin",
        "Load weight end",
        "KV Cache is allocated. #tokens: ",
        "Capture cuda graph begin",
        "Capture cuda graph end",
        "max_total_num_tokens=",
        f"Uvicorn running on http://127.0.0.1:{sim.port}",
        "The server is fired up and ready to roll!",
    ]
    positions = [log.index(line) for line in order]
    assert positions == sorted(positions)


def test_models_and_server_info(shared: SimProcess) -> None:
    sim = shared
    assert sim.get_json("/v1/models") == {
        "object": "list",
        "data": [{"id": "tiny", "object": "model", "owned_by": "sglang", "root": "tiny"}],
    }
    for path in ("/server_info", "/get_server_info"):
        info = sim.get_json(path)
        assert info["version"] == "0.5.2-sim" and info["sim_speedup"] == 20.0
        assert info["served_model_name"] == "tiny" and info["max_total_num_tokens"] > 1_000_000
    assert sim.status("/health_generate") == 200
    assert sim.post("/flush_cache", b"")[0] == 200


def test_chat_stream_format(shared: SimProcess) -> None:
    sim = shared
    status, raw = sim.post("/v1/chat/completions", CHAT)
    assert status == 200
    events = _events(raw)
    assert events[-1] == "[DONE]"
    first, *content, finish, usage, _ = events
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["object"] == "chat.completion.chunk"
    assert len(content) == 4 and all(c["choices"][0]["delta"]["content"] for c in content)
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    assert finish["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_completions_stream_interval_and_non_streaming(launch: Any) -> None:
    sim = launch(*FAST, "--stream-interval", "3")
    sim.wait_ready()
    body = {"prompt": "a b c", "max_tokens": 7, "ignore_eos": True, "stream": True}
    events = _events(sim.post("/v1/completions", body)[1])
    texts = [e["choices"][0]["text"] for e in events[:-1] if e["choices"] and e["choices"][0]["text"]]
    assert [len(t.split()) for t in texts] == [1, 3, 3]
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    status, raw = sim.post("/v1/chat/completions", {**CHAT, "stream": False, "temperature": 0.0})
    answer = json.loads(raw)
    assert status == 200 and answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"]["completion_tokens"] == 4
    native = json.loads(sim.post("/generate", {"text": "hi", "sampling_params": {"max_new_tokens": 2}})[1])
    assert native["meta_info"]["completion_tokens"] <= 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", b"{not json"),
        ("/v1/chat/completions", {"model": "m", "max_tokens": 3}),
        ("/v1/completions", {"model": "m", "max_tokens": 3}),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 0}),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 200_000}),
    ],
)
def test_malformed_requests_get_400_with_an_openai_error(shared: SimProcess, path: str, body: Any) -> None:
    status, raw = shared.post(path, body)
    assert status == 400
    error = json.loads(raw)
    assert error["object"] == "error" and error["code"] == 400 and error["message"]


@pytest.mark.parametrize(
    ("model", "flags", "message"),
    [
        ("Llama-3.1-8B", ["--mem-fraction-static", "0.97"], "Capture cuda graph failed: CUDA out of memory"),
        (
            "Llama-3.1-70B",
            [],
            "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.",
        ),
        ("Llama-3.1-8B", ["--tp-size", "3", "--sim-num-gpus", "4"], "must be divisible by tensor parallel"),
    ],
)
def test_startup_failures_exit_non_zero_with_sglang_messages(
    launch: Any, model: str, flags: list[str], message: str
) -> None:
    sim = launch(*FAST, *flags, model=model)
    assert sim.proc.wait(timeout=20) == 1
    assert message in sim.stderr


def test_unknown_model_exits_with_the_known_list(launch: Any) -> None:
    sim = launch(*FAST, model="gpt2")
    assert sim.proc.wait(timeout=20) == 1
    assert "Llama-3.1-8B" in sim.stderr


def test_http_500_burst_then_success(launch: Any) -> None:
    sim = launch(*FAST, "--sim-http-500-burst", "2")
    sim.wait_ready()
    codes = [sim.post("/v1/chat/completions", CHAT)[0] for _ in range(3)]
    assert codes == [500, 500, 200]


def test_crash_after_n_requests_kills_the_process(launch: Any) -> None:
    sim = launch(*FAST, "--sim-crash-after", "1")
    sim.wait_ready()
    assert sim.post("/v1/chat/completions", CHAT)[0] == 200
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        sim.post("/v1/chat/completions", CHAT)
    assert sim.proc.wait(timeout=10) != 0


def test_hang_after_n_requests_stalls_health(launch: Any) -> None:
    sim = launch(*FAST, "--sim-hang-after", "1")
    sim.wait_ready()
    assert sim.post("/v1/chat/completions", CHAT)[0] == 200
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        sim.post("/v1/chat/completions", CHAT, timeout=0.5)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        urllib.request.urlopen(sim.base + "/health", timeout=0.5)


def test_malformed_sse_every_nth_stream(launch: Any) -> None:
    sim = launch(*FAST, "--sim-malformed-sse-every", "2")
    sim.wait_ready()
    good = sim.post("/v1/chat/completions", CHAT)[1]
    bad = sim.post("/v1/chat/completions", CHAT)[1]
    _events(good)
    with pytest.raises(json.JSONDecodeError):
        _events(bad)


def test_startup_delay_pushes_readiness_back(launch: Any) -> None:
    sim = launch(*FAST, "--sim-startup-delay", "1.5")
    sim.wait_listening()
    started = time.monotonic()
    sim.wait_ready()
    assert time.monotonic() - started > 1.0


def test_startup_counts_from_the_launchers_clock_not_from_the_simulators_imports(launch: Any) -> None:
    # 1B at speed-up 10: ~1.5 s of modelled startup
    launched = time.monotonic()
    sim = launch("--sim-speedup", "10", "--sim-launched-at", f"{launched:.6f}")
    sim.wait_ready()
    assert time.monotonic() - launched >= 1.4  # the modelled startup is kept in full...
    late = launch("--sim-speedup", "10", "--sim-launched-at", f"{time.monotonic() - 100:.6f}")
    late.wait_listening()
    listening = time.monotonic()
    late.wait_ready()
    assert time.monotonic() - listening < 0.5  # ...and time spent before it listens counts toward it
