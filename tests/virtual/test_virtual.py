"""Virtual-time mode behaviour: reproducibility, the two loops agree, stops, accounting."""

from __future__ import annotations

import dataclasses
import heapq
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_sim import SenderConfig, SimulationConfig, StopReason, generate_messages, run
from sms_sim.clock import RealClock
from sms_sim.config import ArrivalKind, Arrivals, RetryPolicy, ServiceDistribution
from sms_sim.output import SafeWriter
from sms_sim.report import Report
from sms_sim.sim.virtual.burst import fits_burst_loop, run_burst
from sms_sim.sim.virtual.general import run_general
from sms_sim.sim.virtual.run import simulate, time_to_send_percentiles
from sms_sim.sim.virtual.state import VirtualRun
from tests.conftest import ROOT
from tests.stop_requests import StopAfterPolls


def without_wall(report: Report) -> Report:
    assert report.virtual is not None
    return dataclasses.replace(report, virtual=dataclasses.replace(report.virtual, wall_s=0.0))


def both_loops(config: SimulationConfig) -> tuple[Report, Report]:
    reports = []
    for force_general in (False, True):
        state = VirtualRun(config, 5, SafeWriter(None), None)
        state.force_general_loop = force_general
        assert fits_burst_loop(state) is not force_general
        loop = run_general if force_general else run_burst
        reason = loop(state, lambda: 0, RealClock(), 0.0)
        percentiles = time_to_send_percentiles(state, loop, None, RealClock())
        reports.append(state.report(reason, 0.0, percentiles))
    return reports[0], reports[1]


def test_same_seed_same_report() -> None:
    config = SimulationConfig(num_messages=3000, senders=[SenderConfig(0.01, 0.004, 0.2)] * 3,
                              seed=9, retry=RetryPolicy(max_attempts=3, base_s=0.1))
    first, second = simulate(config, output=None), simulate(config, output=None)
    assert without_wall(first) == without_wall(second)
    other = simulate(dataclasses.replace(config, seed=10), output=None)
    assert without_wall(other) != without_wall(simulate(config, output=None))


def test_burst_loop_and_general_loop_agree_exactly() -> None:
    """The specialised loop is an optimisation of the general one: every count, time and
    (exact) percentile is identical."""
    configs = [
        SimulationConfig(num_messages=4000, senders=[SenderConfig(0.01 * (i + 1), 0.002, 0.2)
                                                     for i in range(5)], seed=5),
        SimulationConfig(num_messages=3, senders=[SenderConfig(0.01, 0.001, 0.5)] * 7, seed=5),
        SimulationConfig(num_messages=2000, senders=[SenderConfig(0.0, 0.0, 0.5)] * 3, seed=5),
        SimulationConfig(num_messages=5000, senders=[SenderConfig(0.01, 0.0, 0.5)] * 3, seed=5,
                         duration_s=3.3),
    ]
    for config in configs:
        fast, general = both_loops(config)
        assert fast.virtual is not None and general.virtual is not None
        assert dataclasses.replace(fast, virtual=None) == dataclasses.replace(general, virtual=None)
        for field in dataclasses.fields(fast.virtual):
            a, b = getattr(fast.virtual, field.name), getattr(general.virtual, field.name)
            # Sums made in a different order differ in the last bits; percentiles never do.
            if isinstance(a, float) and not field.name.endswith("_send_s"):
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), field.name
            else:
                assert a == b, field.name


def test_outcomes_do_not_depend_on_materialising_texts() -> None:
    config = SimulationConfig(num_messages=2000, senders=[SenderConfig(0.01, 0.005, 0.3)] * 4,
                              seed=3)
    plain = simulate(config, output=None)
    with_texts = simulate(config, output=None, messages=generate_messages(2000, seed=3))
    assert without_wall(plain) == without_wall(with_texts) or (
        dataclasses.replace(plain, virtual=None) == dataclasses.replace(with_texts, virtual=None)
    )


def test_progress_lines_are_stamped_with_simulated_time() -> None:
    output = io.StringIO()
    config = SimulationConfig(num_messages=400, senders=[SenderConfig(0.01, 0.0, 0.0)] * 2,
                              monitor_interval_s=0.3333, seed=1)
    simulate(config, output=output)
    lines = output.getvalue().splitlines()
    # Each sender completes at 0.01, 0.02, ...: 33 each by 0.3333 s, 66 each by 0.6666 s.
    assert lines[0] == ("[sim      0.3s] sent 66  failed 0  avg 10.00 ms/msg  198.0 msg/s  "
                        "queued 332")
    assert lines[1].startswith("[sim      0.7s] sent 132  failed 0")
    assert any(line.startswith("completed: 400 produced") for line in lines)


def test_duration_and_stop_requests_end_the_run_with_everything_accounted() -> None:
    config = SimulationConfig(num_messages=10_000, senders=[SenderConfig(0.01, 0.0, 0.1)] * 2,
                              seed=1, duration_s=10.005)
    report = simulate(config, output=None)
    assert report.stopped_by is StopReason.DURATION
    # Each sender starts sends at 0, 0.01, ..., 10.00 (1001 of them); the ones in flight at
    # the limit finish, none start after it.
    assert report.sent + report.failed == 2002
    assert math.isclose(report.elapsed_s, 10.01)
    assert report.is_accounted and report.unsent == 10_000 - 2002
    stopped = simulate(dataclasses.replace(config, duration_s=None, num_messages=200_000),
                       output=None, stop_requests=lambda: 1)
    assert stopped.stopped_by is StopReason.SIGNAL
    assert stopped.is_accounted and stopped.unsent > 0


@pytest.mark.slow  # real threads or a subprocess
def test_real_time_and_virtual_modes_agree_on_a_small_config() -> None:
    """Makespan within 5 %: a wall-clock margin, not a variance bound (the threaded mode
    measured 1.002-1.009 x ideal on these hosts; the virtual makespan's own spread here is
    under 0.5 %). Failures: bounded as the difference of two independent binomial(n, p)
    counts, sd sqrt(2np(1-p)); conservative, since both modes draw from the same
    per-sender streams and differ only in which sender took which message."""
    n, p = 800, 0.2
    config = SimulationConfig(num_messages=n, senders=[SenderConfig(0.005, 0.002, p)] * 4,
                              seed=17)
    virtual = simulate(config, output=None)
    real = run(config, output=None)
    assert abs(real.elapsed_s - virtual.elapsed_s) <= 0.05 * virtual.elapsed_s
    assert abs(real.failed - virtual.failed) <= 4 * math.sqrt(2 * n * p * (1 - p))
    assert real.produced == virtual.produced == n


sender_configs = st.builds(
    SenderConfig,
    st.sampled_from([0.001, 0.01, 0.05]),
    st.just(0.0),
    st.sampled_from([0.0, 0.3, 1.0]),
    st.sampled_from(list(ServiceDistribution)),
    st.one_of(st.none(), st.sampled_from([10.0, 200.0])),
)
arrivals = st.one_of(
    st.just(Arrivals()),
    st.builds(Arrivals, kind=st.just(ArrivalKind.POISSON),
              rate_per_s=st.sampled_from([5.0, 500.0])),
)


@settings(max_examples=60, deadline=None)
@given(
    num_messages=st.integers(0, 300),
    senders=st.lists(sender_configs, min_size=1, max_size=5),
    arrival=arrivals,
    max_attempts=st.integers(1, 4),
    duration_s=st.one_of(st.none(), st.floats(0.001, 5.0)),
    stop_after_polls=st.one_of(st.none(), st.integers(0, 2)),
    seed=st.integers(0, 2**31),
)
def test_virtual_accounting_identity_holds_for_any_config(
    num_messages: int,
    senders: list[SenderConfig],
    arrival: Arrivals,
    max_attempts: int,
    duration_s: float | None,
    stop_after_polls: int | None,
    seed: int,
) -> None:
    requests = StopAfterPolls(stop_after_polls)
    config = SimulationConfig(num_messages=num_messages, senders=senders, arrivals=arrival,
                              retry=RetryPolicy(max_attempts=max_attempts, base_s=0.01),
                              duration_s=duration_s, seed=seed)
    report = simulate(config, output=None, stop_requests=requests)
    assert report.produced == report.sent + report.failed + report.unsent + report.dead_lettered
    assert report.produced <= num_messages
    assert report.virtual is not None
    assert report.virtual.attempts == sum(s.sent + s.failed for s in report.senders)
    if report.stopped_by is StopReason.COMPLETED:
        assert report.produced == num_messages and report.unsent == 0


@pytest.mark.slow  # real threads or a subprocess
def test_cli_virtual_json_is_byte_identical_apart_from_wall_time() -> None:
    args = [sys.executable, "start.py", "20000", "7", "0.08", "0.02", "0.03", "--virtual",
            "--seed", "5", "--json", "--quiet"]
    outputs = [subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60)
               for _ in range(2)]
    reports = [json.loads(o.stdout) for o in outputs]
    assert all(o.returncode == 0 for o in outputs)
    for report in reports:
        assert report["mode"] == "virtual" and report["wall_s"] > 0
        report.pop("wall_s")
    assert json.dumps(reports[0]) == json.dumps(reports[1])
    assert reports[0]["elapsed_s"] == reports[0]["makespan_s"]


@pytest.mark.slow  # real threads or a subprocess
def test_cli_virtual_run_stops_on_sigint_with_everything_accounted() -> None:
    import os
    import signal

    proc = subprocess.Popen(
        [sys.executable, "start.py", "50000000", "4", "0.01", "0.002", "0.1", "--virtual",
         "--seed", "3", "--interval", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("[sim "), first
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    accounting = [line for line in out.splitlines() if line.startswith("accounting:")]
    assert len(accounting) == 1 and accounting[0].endswith(": ok")
    assert "signal: 50000000 produced" in out


def test_event_heap_holds_at_most_one_event_per_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever N, the senders' heap never holds more than one entry per sender (burst and
    Poisson, with retries and rate limits). Measured by wrapping heapq.heappush."""
    largest: dict[int, int] = {}
    real_push = heapq.heappush

    def recording_push(heap: list[tuple[object, ...]], item: tuple[object, ...]) -> None:
        real_push(heap, item)
        if len(item) == 7:  # the senders' heap; retries use 5-tuples
            largest[id(heap)] = max(largest.get(id(heap), 0), len(heap))

    monkeypatch.setattr(heapq, "heappush", recording_push)
    senders = [SenderConfig(0.01, 0.005, 0.3, rate_limit_per_s=150.0)] * 3
    for arrival in (Arrivals(), Arrivals(kind=ArrivalKind.POISSON, rate_per_s=250.0)):
        largest.clear()
        config = SimulationConfig(num_messages=20_000, senders=senders, arrivals=arrival,
                                  retry=RetryPolicy(max_attempts=3, base_s=0.05), seed=2)
        assert simulate(config, output=None).is_accounted
        assert largest and max(largest.values()) <= len(senders)


@pytest.mark.slow  # real threads or a subprocess
def test_schedule_arrivals_from_a_file(tmp_path: Path) -> None:
    """A schedule file puts its counts in at its times; the run waits for the last batch."""
    schedule = tmp_path / "schedule.csv"
    schedule.write_text("# time_s,count\n0,10\n\n5.0,20\n")
    result = subprocess.run(
        [sys.executable, "start.py", "30", "2", "0.01", "0", "0", "--virtual", "--arrivals",
         f"schedule:{schedule}", "--json", "--quiet", "--seed", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["produced"] == report["sent"] == 30
    # 20 messages arrive at t=5 s and 2 senders need 10 x 10 ms for them.
    assert math.isclose(report["makespan_s"], 5.1)
    bad = subprocess.run(
        [sys.executable, "start.py", "31", "2", "0.01", "0", "0", "--virtual", "--arrivals",
         f"schedule:{schedule}"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "start.py: error: the schedule holds 30 messages but num_messages is 31")
    missing = subprocess.run(
        [sys.executable, "start.py", "30", "2", "0.01", "0", "0", "--virtual", "--arrivals",
         "schedule:/no/such.csv"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert missing.returncode == 2 and "cannot read schedule file" in missing.stderr
    # As a spreadsheet exports it: a byte-order mark and a header row (refused before).
    schedule.write_text("\ufefftime_s,count\n0,10\n5.0,20\n", encoding="utf-8")
    exported = subprocess.run(
        [sys.executable, "start.py", "30", "2", "0.01", "0", "0", "--virtual", "--arrivals",
         f"schedule:{schedule}", "--json", "--quiet", "--seed", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["makespan_s"] == report["makespan_s"]
