"""Reading SGLang's queue-time histogram from ``/metrics`` text: every scheduler's series summed, a window as the
difference of two readings, and nothing made up from text without both the sum and the count."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_autotuner.bench.server_metrics import QueueTimes, parse_queue_times

SGLANG_TEXT = """\
# HELP sglang:queue_time_seconds Histogram of queueing time in seconds.
# TYPE sglang:queue_time_seconds histogram
sglang:queue_time_seconds_bucket{le="0.0",model_name="m",tp_rank="0",dp_rank="0"} 3.0
sglang:queue_time_seconds_bucket{le="+Inf",model_name="m",tp_rank="0",dp_rank="0"} 10.0
sglang:queue_time_seconds_count{model_name="m",tp_rank="0",dp_rank="0"} 10.0
sglang:queue_time_seconds_sum{model_name="m",tp_rank="0",dp_rank="0"} 2.5
sglang:queue_time_seconds_count{model_name="m",tp_rank="0",dp_rank="1"} 6.0
sglang:queue_time_seconds_sum{model_name="m",tp_rank="0",dp_rank="1"} 1.5 1733500000000
sglang:time_to_first_token_seconds_sum{model_name="m"} 99.0
sglang:queue_time_seconds_created{model_name="m",tp_rank="0",dp_rank="0"} 1.7e9
"""


def test_every_schedulers_series_is_summed_and_other_metrics_ignored() -> None:
    assert parse_queue_times(SGLANG_TEXT) == QueueTimes(4.0, 16)
    assert QueueTimes(4.0, 16).mean == pytest.approx(0.25)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<html>404</html>",
        "sglang:queue_time_seconds_sum 1.0\n",  # no count
        'sglang:queue_time_seconds_count{a="b"} 3\n',  # no sum
        "sglang:queue_time_seconds_sum NaN\nsglang:queue_time_seconds_count 3\n",
        'sglang:queue_time_seconds_sum{model_name="m"} x\nsglang:queue_time_seconds_count 3\n',
    ],
)
def test_text_without_both_a_sum_and_a_count_gives_nothing(text: str) -> None:
    assert parse_queue_times(text) is None


@given(
    st.tuples(st.floats(0, 1e6), st.integers(0, 10**6)),
    st.tuples(st.floats(0, 1e6), st.integers(0, 10**6)),
)
def test_a_window_is_never_negative_and_a_counter_that_went_back_is_no_window(
    first: tuple[float, int], second: tuple[float, int]
) -> None:
    before, after = QueueTimes(*first), QueueTimes(*second)
    window = after.since(before)
    if after.requests < before.requests or after.seconds < before.seconds - 1e-9:
        assert window is None  # the server restarted between the readings
    else:
        assert window is not None and window.seconds >= 0 and window.requests >= 0
        assert window.mean is None or window.mean >= 0
