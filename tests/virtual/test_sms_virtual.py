"""The virtual-time SMS loop (issue 14): the same sends as the general loop when its
features are inert, reproducible per seed, receipts that change no send, exact
time-to-delivered percentiles past the kept-times cap, and expiry of late retries."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sms_sim import SenderConfig, SimulationConfig
from sms_sim.config import (
    ArrivalKind,
    Arrivals,
    Content,
    Jitter,
    ReceiptModel,
    RetryPolicy,
    ServiceDistribution,
)
from sms_sim.generate import generate_messages
from sms_sim.model import ReceiptStatus
from sms_sim.report import Report
from sms_sim.segments import segments
from sms_sim.sim.virtual import run as virtual_run
from sms_sim.sim.virtual import percentiles, state
from sms_sim.sim.virtual.run import simulate

BASE = SimulationConfig(
    num_messages=5_000,
    senders=[SenderConfig(0.01, 0.004, 0.2, rate_limit_per_s=60.0)] * 3,
    seed=9,
    arrivals=Arrivals(kind=ArrivalKind.POISSON, rate_per_s=150.0),
    retry=RetryPolicy(max_attempts=3, base_s=0.05),
)


def _without_sms(report: Report) -> Report:
    assert report.virtual is not None
    return dataclasses.replace(report, sms=None,
                               virtual=dataclasses.replace(report.virtual, wall_s=0.0))


def test_one_segment_content_makes_the_general_loops_sends() -> None:
    """Content of one segment, no classes, receipts or validity: the SMS loop draws what
    the general loop draws, so everything but the SMS lines is the same report."""
    plain = simulate(BASE, output=None)
    sms = simulate(dataclasses.replace(BASE, content=Content(text="hello")), output=None)
    assert sms.sms is not None and sms.sms.segments_sent == sms.sent
    assert _without_sms(sms) == _without_sms(plain)


def test_receipts_change_no_send_and_a_seed_fixes_every_outcome() -> None:
    """Receipts come from their own streams, so the sends are those of the run without
    them; the same seed gives the same report, receipts and percentiles included."""
    config = dataclasses.replace(BASE, content=Content(), receipts=ReceiptModel())
    first, again = simulate(config, output=None), simulate(config, output=None)
    assert first.virtual is not None and again.virtual is not None
    assert dataclasses.replace(first, virtual=None) == dataclasses.replace(again, virtual=None)
    no_receipts = simulate(dataclasses.replace(config, receipts=None), output=None)
    assert no_receipts.sms is not None and first.sms is not None
    assert _without_sms(first) == _without_sms(no_receipts)
    assert first.sms.receipts is not None and sum(first.sms.receipts.values()) == first.sent


def test_segments_of_the_generated_texts_are_counted() -> None:
    """With each message's own text, the segments attempted in a run without failures are
    those of the generated texts, counted per GSM 03.38."""
    config = SimulationConfig(num_messages=3_000, senders=[SenderConfig(0.01, 0.0, 0.0)] * 2,
                              seed=4, content=Content())
    report = simulate(config, output=None)
    expected = sum(segments(m.text).count for m in generate_messages(3_000, 4))
    assert report.sms is not None and report.sms.segments_sent == expected


def test_time_to_delivered_past_the_cap_is_replayed_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the cap lowered below the run's delivered receipts (checked after each chunk of
    events, so the run is made longer than one chunk), both percentile sets come from
    replays, and equal those of the run that kept every time."""
    config = dataclasses.replace(BASE, num_messages=40_000, receipts=ReceiptModel(),
                                 content=Content(),
                                 arrivals=Arrivals(kind=ArrivalKind.POISSON, rate_per_s=200.0))
    kept = simulate(config, output=None)
    monkeypatch.setattr(state, "TIMES_KEPT_MAX", 1000)
    replays: list[int] = []
    original = percentiles.select_ranks

    def counted(*args: Any, **kwargs: Any) -> dict[int, float]:
        replays.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(virtual_run, "select_ranks", counted)
    replayed = simulate(config, output=None)
    assert len(replays) == 2  # time to send, then time to delivered
    assert kept.sms is not None and kept.sms.p99_delivered_s is not None
    assert replayed.sms == kept.sms


def test_a_retry_due_after_the_validity_expires_at_once() -> None:
    """Every attempt fails (transient), backoff 10 s, validity 5 s: the first attempt's
    retry would come too late, so each message expires after one attempt; none is dead."""
    sender = SenderConfig(0.1, 0.0, 1.0, ServiceDistribution.CONSTANT)
    config = SimulationConfig(num_messages=20, senders=[sender] * 2, seed=1, valid_for_s=5.0,
                              retry=RetryPolicy(max_attempts=3, base_s=10.0, jitter=Jitter.NONE))
    report = simulate(config, output=None)
    assert (report.expired, report.dead_lettered, report.sent) == (20, 0, 0)
    assert report.sms is not None and report.sms.transient == 20 and report.is_accounted


def test_a_permanent_failure_is_dead_at_once_and_a_throttle_waits_its_retry_after() -> None:
    permanent = SenderConfig(0.1, 0.0, 0.0, ServiceDistribution.CONSTANT, permanent_rate=1.0)
    report = simulate(SimulationConfig(num_messages=10, senders=[permanent], seed=1,
                                       retry=RetryPolicy(max_attempts=5)), output=None)
    assert (report.dead_lettered, report.sms.permanent if report.sms else None) == (10, 10)
    # Throttled once then accepted is impossible to force with one draw per send, so throttle
    # everything: each message is tried max_attempts times, each retry at least retry_after
    # after its failure, and the sender pauses retry_after after each throttled send.
    throttled = SenderConfig(0.1, 0.0, 0.0, ServiceDistribution.CONSTANT, throttle_rate=1.0,
                             retry_after_s=7.0)
    report = simulate(SimulationConfig(num_messages=1, senders=[throttled], seed=1,
                                       retry=RetryPolicy(max_attempts=3, base_s=0.5)),
                      output=None)
    assert report.sms is not None and report.sms.throttled == 3 and report.dead_lettered == 1
    # Attempts at 0, >= 7.1 and >= 14.2 (each after the previous send's end + 7 s).
    assert report.elapsed_s >= 2 * 7.1 + 0.1
    assert report.sms.receipts is None


def test_no_receipt_arrives_for_a_lost_send() -> None:
    config = SimulationConfig(num_messages=200, senders=[SenderConfig(0.01, 0.0, 0.0)],
                              seed=2, receipts=ReceiptModel(lost_rate=1.0,
                                                            undelivered_rate=0.0))
    report = simulate(config, output=None)
    assert report.sms is not None and report.sms.receipts is not None
    assert report.sms.receipts[ReceiptStatus.UNKNOWN] == 200
    assert report.sms.p50_delivered_s is None
