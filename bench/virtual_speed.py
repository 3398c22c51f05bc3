"""Virtual-time speed: completions per wall second of ``simulate``, against a bare heap loop
and SimPy.

What is measured, case A (a burst): N = 1,000,000 messages all present at t = 0, 40 senders
with means spread evenly over 40-120 ms, deviation a quarter of the mean (uniform send
times), failure rate 0.03, ``simulate(config, output=None)``. Its rate is
``report.produced`` / wall seconds (``time.perf_counter`` around the call). Beside it in the
same run:

* minimal: a pure-Python loop over the senders' next-free times, ``heapq.heapreplace`` on
  ``(time, index)`` tuples, one ``random.Random`` per sender, one uniform draw per
  completion, N iterations. No failure draw, no tallies: the floor for any heap-based DES
  in pure Python;
* SimPy (when ``import simpy`` works): 40 processes, each looping ``yield
  env.timeout(draw)`` until a shared remaining counter reaches 0.

Case B (M/M/40 at 90 % load): N = 200,000 messages with Poisson arrivals at 36/s and 40
exponential senders with mean 1.0 s (no failures). ``simulate`` against SimPy (a Poisson
source process and ``simpy.Resource(capacity=40)``, one process per message) and a plain
event loop (a heap of arrival and departure events, a counter of idle servers and of
waiting messages). Every rate is messages completed / wall seconds. Runs rotate which side
goes first; figures are medians over the runs.

Why: the point of the virtual-time mode is to answer "how long would this take" quickly.
The minimal loop says how close the engine comes to what pure Python allows while still
keeping a full report; SimPy is the usual off-the-shelf alternative.

Targets: case A ours >= 1.5M/s, ours/minimal >= 0.4, ours/SimPy >= 1.5; case B
ours/SimPy >= 4. SimPy targets are skipped when SimPy is not installed. (That the event
heap stays bounded in N is by construction, see ``sms_sim/sim/virtual/run.py``; not measured here.)

Command (from the repo root): python3 bench/virtual_speed.py [--runs 5] [--quick]
(``--quick`` uses N = 200,000 for case A and 50,000 for case B.) SimPy is optional and
never a project dependency: run the script with an interpreter that has it, for example
``/tmp/simpy-venv/bin/python bench/virtual_speed.py``.
"""

from __future__ import annotations

import heapq
import random
import sys
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import parse_args, print_header, print_runs, print_target, rotate  # noqa: E402

import sms_sim  # noqa: E402
from sms_sim.config import (  # noqa: E402
    ArrivalKind,
    Arrivals,
    ServiceDistribution,
)
from sms_sim.sim.virtual.run import simulate  # noqa: E402

SEED = 1
A_SENDERS = 40
A_MEAN_LOW_S = 0.040
A_MEAN_HIGH_S = 0.120
A_FAILURE_RATE = 0.03
B_SERVERS = 40
B_SERVICE_MEAN_S = 1.0
B_ARRIVAL_RATE = 36.0
TARGET_A_RATE = 1_500_000.0
TARGET_A_VS_MINIMAL = 0.4
TARGET_A_VS_SIMPY = 1.5
TARGET_B_VS_SIMPY = 4.0
SIMPY_ABSENT = "SimPy not installed"


def _load_simpy() -> ModuleType | None:
    try:
        import simpy
    except ImportError:
        return None
    module: ModuleType = simpy
    return module


def _run_simpy(env: Any, done: list[int], num_messages: int) -> float:
    """Run a SimPy model to its end; completions per wall second, raising unless all done."""
    started = time.perf_counter()
    env.run()
    elapsed_s = time.perf_counter() - started
    if done[0] != num_messages:
        raise RuntimeError(f"SimPy completed {done[0]} of {num_messages}")
    return num_messages / elapsed_s


def _a_means() -> list[float]:
    step = (A_MEAN_HIGH_S - A_MEAN_LOW_S) / (A_SENDERS - 1)
    return [A_MEAN_LOW_S + step * i for i in range(A_SENDERS)]


# ---- case A: a burst on 40 heterogeneous senders -------------------------------------------


def _a_ours(num_messages: int) -> float:
    config = sms_sim.SimulationConfig(
        num_messages=num_messages,
        senders=[sms_sim.SenderConfig(m, m / 4, A_FAILURE_RATE) for m in _a_means()],
        seed=SEED,
    )
    started = time.perf_counter()
    report = simulate(config, output=None)
    elapsed_s = time.perf_counter() - started
    if report.produced != num_messages or report.sent + report.failed != num_messages:
        raise RuntimeError(f"ours completed {report.sent + report.failed} of {num_messages}")
    return report.produced / elapsed_s


def _a_minimal(num_messages: int) -> float:
    """The bare loop: pop the earliest free sender, draw its next send, push it back."""
    means = _a_means()
    rngs = [random.Random(f"minimal:{SEED}:{i}") for i in range(A_SENDERS)]
    draws: list[Callable[[], float]] = [rng.random for rng in rngs]
    lows = [m - m / 4 for m in means]
    spans = [m / 2 for m in means]
    heapreplace = heapq.heapreplace
    started = time.perf_counter()
    heap = [(lows[i] + spans[i] * draws[i](), i) for i in range(A_SENDERS)]
    heapq.heapify(heap)
    for _ in range(num_messages - A_SENDERS):
        t, i = heap[0]
        heapreplace(heap, (t + lows[i] + spans[i] * draws[i](), i))
    makespan = max(t for t, _ in heap)
    elapsed_s = time.perf_counter() - started
    if not makespan > 0:
        raise RuntimeError("minimal loop did not advance")
    return num_messages / elapsed_s


def _a_simpy(simpy: ModuleType, num_messages: int) -> float:
    env: Any = simpy.Environment()
    remaining = [num_messages]
    done = [0]

    def sender(rng: random.Random, low: float, span: float) -> Generator[Any, Any, None]:
        draw = rng.random
        timeout = env.timeout
        while remaining[0] > 0:
            remaining[0] -= 1
            yield timeout(low + span * draw())
            done[0] += 1

    for i, mean in enumerate(_a_means()):
        rng = random.Random(f"simpy:{SEED}:{i}")
        env.process(sender(rng, mean - mean / 4, mean / 2))
    return _run_simpy(env, done, num_messages)


# ---- case B: M/M/40 at 90 % load ------------------------------------------------------------


def _b_ours(num_messages: int) -> float:
    sender = sms_sim.SenderConfig(
        B_SERVICE_MEAN_S, 0.0, 0.0, distribution=ServiceDistribution.EXPONENTIAL
    )
    config = sms_sim.SimulationConfig(
        num_messages=num_messages,
        senders=[sender] * B_SERVERS,
        seed=SEED,
        arrivals=Arrivals(kind=ArrivalKind.POISSON, rate_per_s=B_ARRIVAL_RATE),
    )
    started = time.perf_counter()
    report = simulate(config, output=None)
    elapsed_s = time.perf_counter() - started
    if report.sent != num_messages:
        raise RuntimeError(f"ours sent {report.sent} of {num_messages} ({report.stopped_by})")
    return report.sent / elapsed_s


def _b_plain(num_messages: int) -> float:
    """A textbook event loop: a heap of (time, kind) events, kind 0 arrival, 1 departure."""
    rng = random.Random(f"plain:{SEED}")
    expovariate = rng.expovariate
    heappush, heappop = heapq.heappush, heapq.heappop
    started = time.perf_counter()
    events: list[tuple[float, int]] = [(expovariate(B_ARRIVAL_RATE), 0)]
    idle = B_SERVERS
    waiting = arrived = done = 0
    while events:
        t, kind = heappop(events)
        if kind == 0:
            arrived += 1
            if arrived < num_messages:
                heappush(events, (t + expovariate(B_ARRIVAL_RATE), 0))
            if idle:
                idle -= 1
                heappush(events, (t + expovariate(1.0 / B_SERVICE_MEAN_S), 1))
            else:
                waiting += 1
        else:
            done += 1
            if waiting:
                waiting -= 1
                heappush(events, (t + expovariate(1.0 / B_SERVICE_MEAN_S), 1))
            else:
                idle += 1
    elapsed_s = time.perf_counter() - started
    if done != num_messages:
        raise RuntimeError(f"plain loop completed {done} of {num_messages}")
    return num_messages / elapsed_s


def _b_simpy(simpy: ModuleType, num_messages: int) -> float:
    env: Any = simpy.Environment()
    servers: Any = simpy.Resource(env, capacity=B_SERVERS)
    rng = random.Random(f"simpy:{SEED}:mmc")
    done = [0]

    def message() -> Generator[Any, Any, None]:
        with servers.request() as request:
            yield request
            yield env.timeout(rng.expovariate(1.0 / B_SERVICE_MEAN_S))
        done[0] += 1

    def source() -> Generator[Any, Any, None]:
        for _ in range(num_messages):
            yield env.timeout(rng.expovariate(B_ARRIVAL_RATE))
            env.process(message())

    env.process(source())
    return _run_simpy(env, done, num_messages)


# ---- reporting -----------------------------------------------------------------------------


def _print_case(
    header: str, runs: int, rates: dict[str, list[float]], other: str, other_label: str,
    simpy: ModuleType | None,
) -> dict[str, float]:
    """Print a case's header, its rate lines and ratios; return the median rate of each side."""
    print_header(header, runs)
    median = {
        "ours": print_runs("ours completions/s", rates["ours"], ".0f"),
        other: print_runs(f"{other_label} completions/s", rates[other], ".0f"),
    }
    if simpy is None:
        print(f"  SimPy completions/s: {SIMPY_ABSENT}")
    else:
        version = getattr(simpy, "__version__", "?")
        median["simpy"] = print_runs(f"SimPy {version} completions/s", rates["simpy"], ".0f")
    print(f"  ours/{other}: {median['ours'] / median[other]:.3f}")
    if simpy is not None:
        print(f"  ours/SimPy: {median['ours'] / median['simpy']:.2f}")
    return median


def _print_simpy_target(median: dict[str, float], target: float) -> None:
    label = f"target ours/SimPy >= {target}"
    if "simpy" not in median:
        print_target(label, None, SIMPY_ABSENT)
    else:
        print_target(label, median["ours"] / median["simpy"] >= target)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, argv, runs=5, quick_help="N = 200000 (A) and 50000 (B)")
    n_a = 200_000 if args.quick else 1_000_000
    n_b = 50_000 if args.quick else 200_000
    simpy = _load_simpy()

    sides_a: dict[str, Callable[[], float]] = {
        "ours": lambda: _a_ours(n_a),
        "minimal": lambda: _a_minimal(n_a),
    }
    sides_b: dict[str, Callable[[], float]] = {
        "ours": lambda: _b_ours(n_b),
        "plain": lambda: _b_plain(n_b),
    }
    if simpy is not None:
        sides_a["simpy"] = lambda: _a_simpy(simpy, n_a)
        sides_b["simpy"] = lambda: _b_simpy(simpy, n_b)
    rates_a = rotate(sides_a, args.runs)
    rates_b = rotate(sides_b, args.runs)

    med_a = _print_case(
        f"virtual speed A: burst N={n_a}, {A_SENDERS} senders (means "
        f"{A_MEAN_LOW_S * 1000:.0f}-{A_MEAN_HIGH_S * 1000:.0f} ms, deviation mean/4, "
        f"failure {A_FAILURE_RATE})", args.runs, rates_a, "minimal", "minimal heapq loop", simpy,
    )
    print_target(f"target ours >= {TARGET_A_RATE:.0f}/s", med_a["ours"] >= TARGET_A_RATE)
    print_target(f"target ours/minimal >= {TARGET_A_VS_MINIMAL}",
                 med_a["ours"] / med_a["minimal"] >= TARGET_A_VS_MINIMAL)
    _print_simpy_target(med_a, TARGET_A_VS_SIMPY)

    med_b = _print_case(
        f"virtual speed B: M/M/{B_SERVERS}, Poisson arrivals {B_ARRIVAL_RATE:g}/s, "
        f"exponential service mean {B_SERVICE_MEAN_S:g} s "
        f"(load {B_ARRIVAL_RATE * B_SERVICE_MEAN_S / B_SERVERS:.0%}), N={n_b}",
        args.runs, rates_b, "plain", "plain event loop", simpy,
    )
    _print_simpy_target(med_b, TARGET_B_VS_SIMPY)
    return 0


if __name__ == "__main__":
    sys.exit(main())
