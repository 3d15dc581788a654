"""The simulator as a process: startup, HTTP API and stream format, failures and fault injection."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import SimProcess

from pytest_autotuner.sim.perf_model import SIM_MODEL_VERSION

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
    """The data lines of a stream; every other line must be a write's ``: sim-time`` stamp (or the first write's
    ``: sim-prefill``)."""
    lines = [line for line in raw.decode().split("\n") if line]
    data = [line for line in lines if not line.startswith((": sim-time ", ": sim-prefill "))]
    assert all(line.startswith("data: ") for line in data), lines
    return [line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]) for line in data]


def _stamps(raw: bytes) -> list[float]:
    return [float(line[11:]) for line in raw.decode().split("\n") if line.startswith(": sim-time ")]


def _post(sim: SimProcess, body: dict[str, Any], **headers: str) -> tuple[float, bytes]:
    """POST a chat request with ``X-Sim-*`` headers (``Then="end"`` -> ``X-Sim-Then: end``); (arrival, body)."""
    sent = {"Content-Type": "application/json", **{f"X-Sim-{k}": v for k, v in headers.items()}}
    req = urllib.request.Request(sim.base + "/v1/chat/completions", data=json.dumps(body).encode(), headers=sent)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return float(resp.headers["X-Sim-Arrival"]), resp.read()


def _row(sim: SimProcess, arrival: float) -> dict[str, Any]:
    rows = [r for r in sim.get_json("/sim/timeline")["requests"] if r["arrival"] == arrival]
    assert len(rows) == 1, rows
    return rows[0]


CHAT = {
    "model": "m",
    "messages": [{"role": "user", "content": "one two three four five"}],
    "max_tokens": 4,
    "ignore_eos": True,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def test_health_is_503_during_startup_then_200_and_logs_follow_sglang(launch: Any) -> None:
    # 1B: ~15 simulated s -> 1.5 s wall; on the roofline, since the kernel tables load before the port opens
    # (1-3 s on a busy runner, as SGLang loads its weights) and could use that startup up before anyone polls
    sim = launch("--sim-speedup", "10", "--sim-startup-scale", "1", "--sim-pricing", "roofline")
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
        assert info["version"] == "0.5.23-sim" and info["sim_speedup"] == 20.0
        assert info["sim_noise"] == 0.03 and info["sim_model_version"] == SIM_MODEL_VERSION
        assert info["served_model_name"] == "tiny" and info["max_total_num_tokens"] > 1_000_000
        # one entry per replica, as SGLang's (bench_serving reads internal_states[0] after a run)
        assert info["internal_states"][0]["memory_usage"]["token_capacity"] == info["max_total_num_tokens"]
        assert info["sim_token_counting"] == "word rule" and info["sim_tokenizer"] is None
        assert info["sim_pricing"].startswith(("aiconfigurator-core", "roofline"))
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
    assert usage["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 4,
        "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 0},  # SGLang 0.5.23 UsageInfo (with --enable-cache-report)
    }


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
    # the delay counts from the process's start; the roofline keeps what comes before listening short (the kernel
    # tables load there, 1-3 s on a busy runner, which would use the delay up before the port opens)
    sim = launch(*FAST, "--sim-startup-delay", "1.5", "--sim-pricing", "roofline")
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


# -- server time: stamps, and arrivals that clients promise ------------------------------------------------------


def test_every_write_carries_its_simulated_time_and_the_response_its_arrival(shared: SimProcess) -> None:
    arrival, raw = _post(shared, CHAT, Stamps="1")
    stamps = _stamps(raw)
    row = _row(shared, arrival)
    assert len(stamps) == 4  # one write per token at stream interval 1; the tail goes with the last
    assert stamps == sorted(stamps) and stamps[0] == pytest.approx(row["first_token"], abs=1e-9)
    assert stamps[-1] == pytest.approx(row["finish"], abs=1e-9)
    lines = raw.decode().split("\n")
    (prefill,) = [float(line[14:]) for line in lines if line.startswith(": sim-prefill ")]  # the first write's
    assert prefill == row["prefill_start"] and arrival <= prefill < stamps[0]
    first_write = next(i for i, line in enumerate(lines) if line.startswith(": sim-time "))
    assert lines[first_write + 1] == f": sim-prefill {prefill!r}"


def test_a_plain_client_gets_sglangs_stream_without_stamps(shared: SimProcess) -> None:
    """SGLang's bench_serving parses every non-empty stream line as ``data:`` JSON: no comment lines for it."""
    arrival, raw = _post(shared, CHAT)
    lines = [line for line in raw.decode().split("\n") if line.strip()]
    assert lines and all(line.startswith("data: ") for line in lines), lines
    assert _row(shared, arrival)["output_tokens"] == 4


def test_a_follow_up_arrives_exactly_at_its_predecessors_end_however_late_it_is_sent(launch: Any) -> None:
    sim = launch(*FAST)
    sim.wait_ready()
    _, raw = _post(sim, CHAT, Token="t.0", Then="end")
    end = _stamps(raw)[-1]
    time.sleep(0.3)  # 6 simulated seconds at speed-up 20 if the client's delay counted
    follow, _ = _post(sim, CHAT, Token="t.1", After="t.0@end")
    assert follow == end
    assert sim.get_json("/sim/timeline")["late_promises"] == 0


def test_an_open_loop_arrival_is_its_predecessors_plus_the_gap_early_or_late(launch: Any) -> None:
    sim = launch(*FAST)
    sim.wait_ready()
    first, _ = _post(sim, CHAT, Token="o.0", Then="+0.25")
    second, _ = _post(sim, CHAT, Token="o.1", After="o.0@start", Then="+3")  # sent before its time
    time.sleep(0.4)  # 8 simulated seconds: sent after its time
    third, _ = _post(sim, CHAT, Token="o.2", After="o.1@start")
    assert second == first + 0.25
    assert third == second + 3.0


def _early_request(sim: Any, token: str, after: str) -> tuple[threading.Thread, list[float]]:
    """A request keeping promise ``after``, sent (from a thread) before anything made that promise; its arrival
    stamp lands in the list once it is answered."""
    stamped: list[float] = []
    thread = threading.Thread(target=lambda: stamped.append(_post(sim, CHAT, Token=token, After=after)[0]))
    thread.start()
    time.sleep(0.3)
    return thread, stamped


def test_a_request_that_comes_before_its_promise_waits_for_it(launch: Any) -> None:
    sim = launch(*FAST)
    sim.wait_ready()
    thread, early = _early_request(sim, "b.1", "b.0@start")
    first, _ = _post(sim, CHAT, Token="b.0", Then="+0.5")
    thread.join(timeout=10)
    assert early == [first + 0.5]


def test_a_withdrawn_promise_lets_time_go_on_and_an_unkept_one_is_dropped_after_the_patience(launch: Any) -> None:
    sim = launch(*FAST, "--sim-promise-patience", "2")
    sim.wait_ready()
    _, raw = _post(sim, CHAT, Token="w.0", Then="end")
    end = _stamps(raw)[-1]
    release = urllib.request.Request(sim.base + "/sim/release", data=b"", headers={"X-Sim-After": "w.0@end"})
    with urllib.request.urlopen(release, timeout=5) as resp:
        assert resp.status == 204
    time.sleep(0.1)
    later, raw = _post(sim, CHAT, Token="w.1", Then="end")  # no follow-up will come for this one
    assert later > end  # without the release, time would still stand at `end`
    held_at = _stamps(raw)[-1]
    assert sim.get_json("/sim/now?tag=w")["owed"] == 1  # the clock waits on that client (not a hung step)
    # Arrives while the clock waits for w.1's follower (stamped at that instant); runs once the promise is dropped
    # after --sim-promise-patience wall seconds.
    stranger, _ = _post(sim, CHAT)
    assert stranger == held_at
    assert sim.get_json("/sim/timeline")["late_promises"] == 1
    assert sim.get_json("/sim/now?tag=w")["owed"] == 0


def test_a_request_waiting_for_a_promise_that_is_withdrawn_is_stamped_on_arrival_and_not_late(launch: Any) -> None:
    """A client that withdraws a promise its own request was keeping (the request failed on its side, or its
    cell was cut, as it was sent): that request is placed when it came, and nobody is told the host lagged."""
    sim = launch(*FAST)
    sim.wait_ready()
    thread, waited = _early_request(sim, "x.1", "x.0@start")
    release = urllib.request.Request(sim.base + "/sim/release", data=b"", headers={"X-Sim-After": "x.0@start"})
    with urllib.request.urlopen(release, timeout=5) as resp:
        assert resp.status == 204
    thread.join(timeout=10)
    assert len(waited) == 1
    assert sim.get_json("/sim/now?tag=x")["late"] == 0


def test_get_load_counts_requests_in_the_server_and_the_ladder_waits_for_it_to_drain(launch: Any) -> None:
    from pytest_autotuner.bench.server_control import wait_until_idle
    from pytest_autotuner.runtimes.base import Endpoint

    sim = launch("--sim-startup-scale", "0.02")
    sim.wait_ready()
    assert sim.get_json("/get_load") == [{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0}]
    body = {**CHAT, "max_tokens": 400}
    threads = [threading.Thread(target=_post, args=(sim, body), daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while sim.get_json("/get_load")[0]["num_reqs"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim.get_json("/get_load")[0]["num_reqs"] > 0
    wait_until_idle(Endpoint(sim.base, "m"), None, limit_s=60)
    assert sim.get_json("/get_load")[0]["num_reqs"] == 0  # it returned because the server drained
    for thread in threads:
        thread.join(10)


def test_a_server_without_get_load_is_not_waited_on() -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from pytest_autotuner.bench.server_control import wait_until_idle
    from pytest_autotuner.runtimes.base import Endpoint

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        waited = wait_until_idle(Endpoint(f"http://127.0.0.1:{server.server_port}", "m"), None, limit_s=3600)
        assert waited < 60  # an hour's limit, and it did not wait (a 404 says nothing about load)
    finally:
        server.shutdown()


def test_a_bad_distortion_file_stops_the_start_naming_file_field_and_value(tmp_path: Path) -> None:
    reality = tmp_path / "reality.json"
    reality.write_text('{"decode": -2}')
    sim = SimProcess(tmp_path, "--sim-distortion", str(reality))
    try:
        assert sim.proc.wait(timeout=60) == 1
    finally:
        sim.kill()
    assert f"{reality}: decode must be in (0, 100], got -2" in sim.stderr


def test_sim_now_says_what_it_last_did_for_a_cells_requests(launch: Any) -> None:
    """``/sim/now?tag=T`` (the client's stall watchdog and cell limit read it): the requests of ``T`` still in the
    server with the simulated time of their latest write (their arrival before any), and ``last``, the latest
    write to any request of ``T``, finished ones included; other tags and untagged requests are not counted."""
    sim = launch(*FAST, "--sim-hang-after", "2")
    sim.wait_ready()
    assert set(sim.get_json("/sim/now")) == {"now"}
    before = sim.get_json("/sim/now?tag=t")
    assert before["progress"] == {} and before["last"] is None
    _, raw = _post(sim, CHAT, Token="t.0")
    end = _stamps(raw)[-1]
    _post(sim, CHAT, Token="u.0")  # another cell's: its writes are not t's
    view = sim.get_json("/sim/now?tag=t")
    assert view["progress"] == {} and view["last"] == end

    def never_answered() -> None:
        with contextlib.suppress(OSError):  # timed out, or cut when the server is killed
            _post(sim, CHAT, Token="t.1")

    hung = threading.Thread(target=never_answered, daemon=True)
    hung.start()  # the third request: the server hangs and never answers it
    deadline = time.monotonic() + 5
    while "t.1" not in sim.get_json("/sim/now?tag=t")["progress"]:
        assert time.monotonic() < deadline, "the hung request never showed up in /sim/now"
        time.sleep(0.05)
    view = sim.get_json("/sim/now?tag=t")
    (arrival,) = view["progress"].values()
    assert arrival >= end and view["last"] == arrival  # taken in, nothing written since
    time.sleep(0.2)
    later = sim.get_json("/sim/now?tag=t")
    assert later["progress"] == view["progress"] and later["now"] > arrival  # its clock runs; nothing is done
