"""Exact time-to-send percentiles (issue 10): identical sends give identical percentiles
whatever the message count, none gives "n/a", and a run past the kept-times cap is replayed
to the same exact values instead of being sampled."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_sim import SenderConfig, SimulationConfig
from sms_sim.config import ArrivalKind, Arrivals, RetryPolicy
from sms_sim.report import Report, format_report
from sms_sim.sim.virtual import run as virtual_run
from sms_sim.sim.virtual import state
from sms_sim.sim.virtual.percentiles import nearest_rank, pick_ranks, select_ranks
from sms_sim.sim.virtual.run import simulate
from tests.stop_requests import StopAfterPolls


def percentiles(report: Report) -> tuple[float | None, ...]:
    assert report.virtual is not None
    v = report.virtual
    return v.p50_send_s, v.p95_send_s, v.p99_send_s


@pytest.mark.parametrize("arrivals", [Arrivals(), Arrivals(kind=ArrivalKind.POISSON,
                                                           rate_per_s=500.0)])
def test_an_early_stop_reports_the_same_percentiles_for_1e5_and_1e8_messages(
    arrivals: Arrivals,
) -> None:
    """The issue's reproduction: stopping at 1 simulated second, the same sends happened
    whether 1e5 or 1e8 messages were queued, so the percentiles must be the same (they were
    0.527 s, 0.657 s or 0.000 s when the burst loop sampled every N // 100000-th send)."""
    reports = [
        simulate(SimulationConfig(num_messages=n, senders=[SenderConfig(0.01, 0.004, 0.2)] * 4,
                                  seed=3, duration_s=1.0, arrivals=arrivals), output=None)
        for n in (10**5, 10**8)
    ]
    assert reports[0].sent == reports[1].sent > 0
    assert percentiles(reports[0]) == percentiles(reports[1])
    assert all(p is not None and p > 0 for p in percentiles(reports[0]))


def test_a_run_without_sends_has_no_percentiles() -> None:
    report = simulate(SimulationConfig(num_messages=50, senders=[SenderConfig(0.01, 0.0, 1.0)],
                                       seed=1), output=None)
    assert report.sent == 0
    assert percentiles(report) == (None, None, None)
    assert "time to send p50 n/a p95 n/a p99 n/a" in format_report(report)
    assert report.to_dict()["time_to_send_ms"] == {"p50": None, "p95": None, "p99": None}


def test_percentiles_are_nearest_rank_order_statistics() -> None:
    """Constant 10 ms sends by one sender: the k-th send is done at 10k ms, so with 200
    sends p50 is the 100th (1.0 s), p95 the 190th and p99 the 198th."""
    report = simulate(SimulationConfig(num_messages=200, senders=[SenderConfig(0.01, 0.0, 0.0)],
                                       seed=1), output=None)
    assert percentiles(report) == pytest.approx((1.0, 1.9, 1.98), abs=1e-9)


CONFIGS = [
    pytest.param(SimulationConfig(num_messages=120_000, senders=[SenderConfig(0.01, 0.005, 0.1)]
                                  * 5, seed=2), id="burst"),
    pytest.param(SimulationConfig(num_messages=100_000, senders=[SenderConfig(0.01, 0.005, 0.3)]
                                  * 5, seed=2, arrivals=Arrivals(kind=ArrivalKind.POISSON,
                                                                 rate_per_s=450.0),
                                  retry=RetryPolicy(max_attempts=3, base_s=0.05)), id="general"),
    pytest.param(SimulationConfig(num_messages=100_000, senders=[SenderConfig(0.0, 0.0, 0.0)]
                                  * 2, seed=2), id="all-zero"),
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("stop_after_polls", [None, 2])
def test_a_run_past_the_kept_times_cap_is_replayed_to_the_same_percentiles(
    config: SimulationConfig, stop_after_polls: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the cap lowered to 1,000 times, the run forgets them after its first chunk of
    events and the percentiles come from replays (ascending picks for the burst loop,
    narrowing passes for the general one); they equal those of the run that kept every
    time, also when a stop request ended the run mid-way (the replay stops at that poll)."""
    def run() -> Report:
        return simulate(config, output=None, stop_requests=StopAfterPolls(stop_after_polls))

    kept = run()
    monkeypatch.setattr(state, "TIMES_KEPT_MAX", 1000)
    replays: list[str] = []

    def counted(name: str, original: Callable[..., dict[int, float]], *args: object,
                **kwargs: object) -> dict[int, float]:
        replays.append(name)
        return original(*args, **kwargs)

    for name in ("pick_ranks", "select_ranks"):
        monkeypatch.setattr(virtual_run, name,
                            functools.partial(counted, name, getattr(virtual_run, name)))
    replayed = run()
    assert kept.virtual is not None and replayed.virtual is not None
    assert replays == ["pick_ranks" if config.arrivals.kind is ArrivalKind.BURST
                       else "select_ranks"]
    assert dataclasses.replace(replayed.virtual, wall_s=0) == dataclasses.replace(
        kept.virtual, wall_s=0)


values = st.lists(st.one_of(st.floats(0, 1e6), st.sampled_from([0.0, 1.0, 1.0 + 2**-40])),
                  min_size=1, max_size=400)


@given(values=values, qs=st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=4),
       kept_max=st.sampled_from([1, 3, 50, 10**6]))
@settings(max_examples=200, deadline=None)
def test_select_ranks_is_exact_in_any_order_with_any_cap(
    values: list[float], qs: list[float], kept_max: int
) -> None:
    ranks = [nearest_rank(q, len(values)) for q in qs]
    passes = []

    def feed(record: Callable[[float], None]) -> None:
        passes.append(1)
        for value in values:
            record(value)

    found = select_ranks(feed, ranks, kept_max=kept_max)
    ordered = sorted(values)
    assert found == {rank: ordered[rank - 1] for rank in ranks}
    assert len(passes) <= 12  # narrowing, not a pass per value


def test_pick_ranks_takes_an_ascending_stream_once_and_notices_a_divergence() -> None:
    def feed(record: Callable[[float], None]) -> None:
        for value in (0.0, 0.5, 0.5, 2.0):
            record(value)

    assert pick_ranks(feed, [1, 3, 4]) == {1: 0.0, 3: 0.5, 4: 2.0}
    with pytest.raises(ValueError, match="before rank 5"):
        pick_ranks(feed, [5])
