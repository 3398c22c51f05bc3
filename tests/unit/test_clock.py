"""VirtualClock semantics, and RealClock against real time (the only real-clock tests)."""

from __future__ import annotations

import threading

import pytest

from sms_sim import RealClock, VirtualClock
from sms_sim.clock import VIRTUAL_EPOCH_S


def test_virtual_clock_starts_at_the_odd_epoch_and_moves_only_when_told() -> None:
    clock = VirtualClock()
    assert clock.now() == clock.monotonic() == VIRTUAL_EPOCH_S
    clock.advance(2.5)
    assert clock.now() == VIRTUAL_EPOCH_S + 2.5
    clock.advance_to(VIRTUAL_EPOCH_S + 10)
    assert clock.monotonic() == VIRTUAL_EPOCH_S + 10


def test_virtual_clock_refuses_to_go_backwards() -> None:
    clock = VirtualClock(100.0)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.advance_to(99.0)


def test_virtual_sleep_advances_unless_stopped() -> None:
    clock, stop = VirtualClock(0.0), threading.Event()
    assert clock.sleep(1.5, stop) is False
    assert clock.now() == 1.5
    assert clock.sleep(-3, stop) is False  # a deadline already passed: no move
    assert clock.now() == 1.5
    stop.set()
    assert clock.sleep(1.0, stop) is True
    assert clock.now() == 1.5


@pytest.mark.slow
def test_real_clock_sleep_is_interruptible_and_roughly_right() -> None:
    clock, stop = RealClock(), threading.Event()
    start = clock.monotonic()
    assert clock.sleep(0.02, stop) is False
    assert clock.monotonic() - start >= 0.019  # never early; lateness is not asserted
    stop.set()
    start = clock.monotonic()
    assert clock.sleep(30, stop) is True
    assert clock.monotonic() - start < 10  # generous: returns at once when stopped
    assert abs(clock.now() - __import__("time").time()) < 60
