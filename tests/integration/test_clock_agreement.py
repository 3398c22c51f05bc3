"""One model, two clocks: the threaded mode on real time and the virtual-time mode agree on
a configuration with Poisson arrivals and retries, and on one with the SMS model on
(segments, error classes, receipts), within tolerances derived from the model's own
variance; and the command line runs such a model without ``--virtual``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import subprocess
import sys

import pytest

from sms_sim import SenderConfig, SimulationConfig, StopReason, run
from sms_sim.config import ArrivalKind, Arrivals, Content, Jitter, ReceiptModel, RetryPolicy
from sms_sim.generate import generate_messages
from sms_sim.model import ReceiptStatus
from sms_sim.policy import arrival_times, arrivals_rng, never_delivered_probability
from sms_sim.segments import segments
from sms_sim.sim.virtual.run import simulate
from tests.conftest import ROOT

# Real threads, processes or wall-clock waits (STYLE.md section 10).
pytestmark = pytest.mark.slow


N = 400
RATE_PER_S = 400.0  # the last of N arrivals comes at about N / rate = 1 s
FAILURE_RATE = 0.3
MAX_ATTEMPTS = 5
SEED = 11
REPLICATIONS = 300
# Wall-clock lateness the threaded run may add to the makespan on top of the model's
# randomness; it only ever makes the real run later. Budget on an idle host: the last
# arrival is released up to one OS oversleep late (release times are absolute, so lateness
# does not accumulate), ~1 ms; the last message's up to 4 retries each start up to
# RETRY_DRAIN_S (1 ms) after the failure plus the producer's wake-up and oversleep, ~2 ms
# each; its up to 5 sends each oversleep up to ~1 ms; thread start and end-of-run detection
# ~3 ms: about 20 ms in all. 50 ms leaves room for a shared 2-core host.
WALL_MARGIN_S = 0.05


def config() -> SimulationConfig:
    return SimulationConfig(
        num_messages=N,
        senders=[SenderConfig(0.002, 0.001, FAILURE_RATE)] * 4,  # capacity 2000/s, load ~29 %
        seed=SEED,
        arrivals=Arrivals(kind=ArrivalKind.POISSON, rate_per_s=RATE_PER_S),
        retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, base_s=0.01, factor=2.0, cap_s=0.1,
                          jitter=Jitter.FULL),
    )


def test_real_time_and_virtual_time_agree_with_retries_and_poisson_arrivals() -> None:
    """Sent, dead-lettered, failed attempts and makespan agree within derived tolerances.

    Both modes draw the arrival times from ``arrivals_rng(SEED)``, so they share one arrival
    sequence; everything else (which sender takes which message, each outcome, each retry
    delay) is an independent draw from the same model, so each difference below is that of
    two independent copies, with variance twice the single-run variance.

    * Dead letters: a message is dead when all 5 attempts fail, p_dead = 0.3**5 ~ 0.00243,
      so the count is binomial(N, p_dead), sd sqrt(N p (1-p)) ~ 0.985 for N = 400; the
      difference has sd sqrt(2) times that, ~1.39; allow 4 sd (~5.6). ``sent`` is N minus
      the dead in a completed run, so the same bound holds for it.
    * Failed attempts: per message F = min(G, 5) failed attempts, G geometric,
      P(F = k) = p**k (1 - p) for k < 5 and P(F = 5) = p**5; mean and variance computed
      exactly below; the total over N messages has variance N var(F); allow 4 sd of the
      difference.
    * Makespan = last arrival + residual (the service, queueing and retries of the last
      messages). The last arrival is shared, so only the residual differs: its sd given
      these arrival times is estimated from REPLICATIONS virtual runs on a schedule of the
      same times with other seeds (other sender and retry draws), and the tolerance is
      4 sqrt(2) times it (~0.14 s here). The residual is skewed (a maximum over the last
      messages, bounded by their service times plus the backoff caps, ~0.17 s), so rather
      than trust a normal tail the test checks the tolerance on the replications
      themselves: fewer than 1 % of them fall outside it around this seed's virtual
      makespan (none did when this was written). The real run may additionally be late by
      WALL_MARGIN_S (see its comment), never early.
    """
    base = config()
    virtual = simulate(base, output=None)
    assert virtual.virtual is not None
    real = run(base, output=None)

    assert real.stopped_by is virtual.stopped_by is StopReason.COMPLETED
    assert real.produced == virtual.produced == N
    assert real.is_accounted and real.unsent == 0 and real.failed == virtual.failed == 0

    p, k = FAILURE_RATE, MAX_ATTEMPTS
    p_dead = p**k
    dead_sd = math.sqrt(2 * N * p_dead * (1 - p_dead))
    assert abs(real.dead_lettered - virtual.dead_lettered) <= 4 * dead_sd
    assert abs(real.sent - virtual.sent) <= 4 * dead_sd

    pmf = {j: p**j * (1 - p) for j in range(k)} | {k: p_dead}
    mean_f = sum(j * q for j, q in pmf.items())
    var_f = sum(j * j * q for j, q in pmf.items()) - mean_f**2
    real_failed_attempts = sum(s.failed for s in real.senders)
    assert abs(real_failed_attempts - virtual.virtual.failed_attempts) <= 4 * math.sqrt(
        2 * N * var_f
    )

    schedule = tuple(arrival_times(base.arrivals, N, arrivals_rng(SEED)))
    last_arrival_s = schedule[-1][0]
    same_arrivals = dataclasses.replace(
        base, arrivals=Arrivals(kind=ArrivalKind.SCHEDULE, schedule=schedule)
    )
    # The schedule reproduces the Poisson run exactly (same arrivals, same sender streams).
    assert simulate(same_arrivals, output=None).elapsed_s == virtual.elapsed_s
    makespans = [
        simulate(dataclasses.replace(same_arrivals, seed=seed), output=None).elapsed_s
        for seed in range(1000, 1000 + REPLICATIONS)
    ]
    tolerance_s = 4 * math.sqrt(2) * statistics.stdev(makespans)
    outside = sum(abs(m - virtual.elapsed_s) > tolerance_s for m in makespans)
    assert outside < 0.01 * REPLICATIONS, (outside, tolerance_s)

    assert real.elapsed_s > last_arrival_s  # the last message was released at its time
    difference_s = real.elapsed_s - virtual.elapsed_s
    assert -tolerance_s <= difference_s <= tolerance_s + WALL_MARGIN_S, (
        difference_s, tolerance_s
    )


def test_the_command_line_runs_arrivals_and_retries_on_real_time() -> None:
    """Once refused without ``--virtual``; now the threaded run honours them."""
    result = subprocess.run(
        [sys.executable, "start.py", "20", "2", "0.001", "0", "0.5", "--arrivals", "poisson:200",
         "--max-attempts", "3", "--backoff-base", "0.005", "--seed", "1", "--quiet", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["stopped_by"], report["produced"], report["accounted"]) == (
        "completed", 20, True)
    # Retries on: a message that fails for good is dead-lettered, never 'failed'; and with
    # a failure rate of 0.5 some attempts failed (all 20 first attempts succeeding: 1e-6).
    assert report["failed"] == 0 and report["unsent"] == 0
    assert report["sent"] + report["dead_lettered"] == 20
    assert sum(s["failed"] for s in report["senders"]) > 0


SMS_SENDER = SenderConfig(0.002, 0.001, 0.1, rate_limit_per_s=1000.0, per_segment_s=0.0005,
                          permanent_rate=0.05, throttle_rate=0.05, retry_after_s=0.005)
SMS_ATTEMPTS = 3
RECEIPTS = ReceiptModel(median_s=0.02, sigma=0.5, undelivered_rate=0.05, lost_rate=0.05)


def sms_config() -> SimulationConfig:
    return dataclasses.replace(
        config(), senders=[SMS_SENDER] * 4, content=Content(), receipts=RECEIPTS,
        retry=RetryPolicy(max_attempts=SMS_ATTEMPTS, base_s=0.01, factor=2.0, cap_s=0.1,
                          jitter=Jitter.FULL),
    )


def _per_message_moments() -> dict[str, tuple[float, float]]:
    """Exact mean and variance, per message, of its attempts and of its failed attempts of
    each class: every sequence of outcomes (accepted a, transient t, permanent p, throttled
    h per attempt; a chain ends when accepted, permanent or after the last attempt) with
    its probability, enumerated."""
    rates = {"t": SMS_SENDER.failure_rate, "p": SMS_SENDER.permanent_rate,
             "h": SMS_SENDER.throttle_rate}
    rates["a"] = 1 - sum(rates.values())
    chains: list[tuple[str, float]] = []

    def extend(prefix: str, probability: float) -> None:
        for outcome, p in rates.items():
            chain = prefix + outcome
            if outcome in "ap" or len(chain) == SMS_ATTEMPTS:
                chains.append((chain, probability * p))
            else:
                extend(chain, probability * p)

    extend("", 1.0)
    moments = {}
    for name, count in (("attempts", len), ("t", lambda c: c.count("t")),
                        ("p", lambda c: c.count("p")), ("h", lambda c: c.count("h"))):
        mean = sum(p * count(c) for c, p in chains)
        moments[name] = (mean, sum(p * count(c) ** 2 for c, p in chains) - mean**2)
    return moments


def test_real_time_and_virtual_time_agree_with_segments_classes_and_receipts() -> None:
    """The SMS model on both clocks (issue 14): random texts (one or two segments), a rate
    limit in segments/s and a per-segment time, all three error classes with retries, and
    delivery receipts. Same arrivals and the same messages (one seed); every other draw is
    independent between the modes, so each difference has twice a single run's variance.

    * Dead letters: binomial(N, p_dead), p_dead = ``never_delivered_probability``.
    * Failed attempts per class and segments attempted: sums over messages of independent
      per-message counts whose exact mean and variance ``_per_message_moments`` enumerates;
      segments attempted is sum_j k_j A_j, variance sum_j k_j^2 var(A).
    * Segments sent are the segments of the messages not dead, so in each mode
      total - 2 dead <= segments sent <= total - dead, exactly (k is 1 or 2).
    * Receipts: per message delivered with p = (1 - p_dead) (1 - lost - undelivered),
      unknown with (1 - p_dead) lost: binomial.
    * Time to delivered p50: its sd given these arrivals is estimated from REPLICATIONS
      virtual runs with other seeds (as the makespan above); allow 4 sqrt(2) sd, and the
      real run up to WALL_MARGIN_S later (receipts are timed at the monitor's drain, at most
      RETRY_DRAIN_S after the send, plus the sends' own lateness).
    """
    base = sms_config()
    virtual = simulate(base, output=None)
    real = run(base, output=None)
    assert real.stopped_by is virtual.stopped_by is StopReason.COMPLETED
    assert real.is_accounted and virtual.is_accounted and real.unsent == 0
    assert real.sms is not None and virtual.sms is not None

    p_dead = never_delivered_probability(SMS_SENDER, SMS_ATTEMPTS)
    dead_sd = math.sqrt(2 * N * p_dead * (1 - p_dead))
    assert abs(real.dead_lettered - virtual.dead_lettered) <= 4 * dead_sd

    moments = _per_message_moments()
    for name, real_count, virtual_count in (
            ("t", real.sms.transient, virtual.sms.transient),
            ("p", real.sms.permanent, virtual.sms.permanent),
            ("h", real.sms.throttled, virtual.sms.throttled)):
        assert abs(real_count - virtual_count) <= 4 * math.sqrt(2 * N * moments[name][1]), name

    ks = [segments(m.text).count for m in generate_messages(N, SEED)]
    total = sum(ks)
    for report in (real, virtual):
        assert report.sms is not None
        assert total - 2 * report.dead_lettered <= report.sms.segments_sent <= (
            total - report.dead_lettered)
    attempted_sd = math.sqrt(2 * sum(k * k for k in ks) * moments["attempts"][1])
    assert abs(real.sms.segments_attempted - virtual.sms.segments_attempted) <= (
        4 * attempted_sd)

    assert real.sms.receipts is not None and virtual.sms.receipts is not None
    accepted = 1 - p_dead
    for status, p in ((ReceiptStatus.DELIVERED, accepted * 0.9),
                      (ReceiptStatus.UNKNOWN, accepted * 0.05)):
        assert abs(real.sms.receipts[status] - virtual.sms.receipts[status]) <= 4 * math.sqrt(
            2 * N * p * (1 - p)), status

    schedule = tuple(arrival_times(base.arrivals, N, arrivals_rng(SEED)))
    same_arrivals = dataclasses.replace(
        base, arrivals=Arrivals(kind=ArrivalKind.SCHEDULE, schedule=schedule))
    medians = []
    for seed in range(2000, 2000 + REPLICATIONS // 3):
        replica = simulate(dataclasses.replace(same_arrivals, seed=seed), output=None).sms
        assert replica is not None and replica.p50_delivered_s is not None
        medians.append(replica.p50_delivered_s)
    tolerance_s = 4 * math.sqrt(2) * statistics.stdev(medians)
    assert real.sms.p50_delivered_s is not None and virtual.sms.p50_delivered_s is not None
    difference_s = real.sms.p50_delivered_s - virtual.sms.p50_delivered_s
    assert -tolerance_s <= difference_s <= tolerance_s + WALL_MARGIN_S, (
        difference_s, tolerance_s)
