"""Exact time-to-send percentiles of a virtual run, in memory that does not grow with N.

A percentile here is the nearest-rank order statistic of the sends that happened: the
``ceil(q * n)``-th smallest of the ``n`` times to send, so identical sends give identical
percentiles whatever the total message count, and a run with no send has none ("n/a").

A run keeps its times in an ``array('d')`` up to ``TIMES_KEPT_MAX`` (8 MiB): every
realistic run, and any early stop, is answered from them. A run with more successful sends
forgets them (the loops clear the array once it passes the cap, checked once per chunk of
events) and is **replayed**: the event loops are deterministic given the configuration, the
seed and the poll at which a stop request was honoured, so running the same loop again
yields the same times in the same order. The burst loop yields them in ascending order, so
one replay picks the wanted ranks as they go by (``pick_ranks``); the general loop's need
``select_ranks``: a pass counts them in 1 % logarithmic buckets, the next keeps only the
bucket holding each rank (narrowed further, linearly, while a bucket still holds more than
``TIMES_KEPT_MAX``). So a run past the cap costs one (burst) or about two (general) more runs
of time, and never more memory: exactness is worth that for the rare run of over a million
sends, and it is what makes an early stop of a 1e8-message run report what a 1e5 one does.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "TIMES_KEPT_MAX",
    "QUANTILES",
    "nearest_rank",
    "quantiles_of_sorted",
    "pick_ranks",
    "select_ranks",
]

TIMES_KEPT_MAX = 1 << 20  # times to send a run keeps (8 MiB of doubles) before replaying
QUANTILES = (0.50, 0.95, 0.99)
_INV_LOG_GROWTH = 1.0 / math.log(1.01)  # 1 % wide logarithmic buckets
_LINEAR_BUCKETS = 4096

Feed = Callable[[Callable[[float], None]], None]  # calls its argument once per value


def nearest_rank(q: float, count: int) -> int:
    """The 1-based rank of the ``q`` quantile (0 < q <= 1) among ``count`` >= 1 values."""
    if not 0 < q <= 1 or count < 1:
        raise ValueError(f"need 0 < q <= 1 and count >= 1 (got {q!r}, {count!r})")
    return max(1, math.ceil(q * count))


def quantiles_of_sorted(values: Sequence[float], qs: Sequence[float]) -> tuple[float | None, ...]:
    """The nearest-rank quantiles of ascending ``values``; None for each when empty."""
    if not values:
        return tuple(None for _ in qs)
    return tuple(values[nearest_rank(q, len(values)) - 1] for q in qs)


def pick_ranks(feed: Feed, ranks: Sequence[int]) -> dict[int, float]:
    """The values at 1-based ``ranks`` of a stream that ``feed`` delivers in ascending
    order, in O(len(ranks)) memory. Raises ``ValueError`` if the stream is shorter than the
    largest rank or is not ascending (a replay that diverged)."""
    wanted = sorted(set(ranks))
    found: dict[int, float] = {}
    seen = 0
    previous = -math.inf
    position = 0

    def record(value: float) -> None:
        nonlocal seen, previous, position
        if value < previous:
            raise ValueError(f"stream not ascending at value {seen + 1}")
        previous = value
        seen += 1
        while position < len(wanted) and wanted[position] == seen:
            found[seen] = value
            position += 1

    feed(record)
    if position < len(wanted):
        raise ValueError(f"stream ended at {seen} values, before rank {wanted[position]}")
    return found


@dataclass(frozen=True, slots=True)
class _Window:
    """The values whose keys equal ``targets`` level by level. Level 0 keys are 1 %
    logarithmic buckets; level L >= 1 keys are linear buckets over ``spans[L - 1]``, the
    exact range of the values in the window of depth L. Every key is monotone in the value,
    so a window is an interval of the sorted stream."""

    targets: tuple[int, ...] = ()
    spans: tuple[tuple[float, float], ...] = ()

    def place(self, value: float) -> int:
        """-1 below the window, 0 inside, 1 above."""
        for level, target in enumerate(self.targets):
            key = _key(value, level, self.spans)
            if key != target:
                return -1 if key < target else 1
        return 0


@dataclass(slots=True)
class _Tally:
    """One pass over the stream for one window: how many values come before it, and its
    own values by next-level key (count, least, greatest), kept as well while they fit."""

    window: _Window
    kept_max: int
    below: int = 0
    buckets: dict[int, list[float]] = field(default_factory=dict)  # key: [count, min, max]
    kept: array[float] | None = field(default_factory=lambda: array("d"))

    def add(self, value: float) -> None:
        place = self.window.place(value)
        if place < 0:
            self.below += 1
        elif place == 0:
            key = _key(value, len(self.window.targets), self.window.spans)
            bucket = self.buckets.get(key)
            if bucket is None:
                self.buckets[key] = [1, value, value]
            else:
                bucket[0] += 1
                bucket[1] = min(bucket[1], value)
                bucket[2] = max(bucket[2], value)
            if self.kept is not None:
                self.kept.append(value)
                if len(self.kept) > self.kept_max:
                    self.kept = None


def _key(value: float, level: int, spans: tuple[tuple[float, float], ...]) -> int:
    if level == 0:
        return math.floor(math.log(value) * _INV_LOG_GROWTH) if value > 0 else -(10**9)
    low, high = spans[level - 1]
    if high <= low:
        return 0
    return min(_LINEAR_BUCKETS - 1, int((value - low) * _LINEAR_BUCKETS / (high - low)))


def select_ranks(
    feed: Feed, ranks: Sequence[int], *, kept_max: int = TIMES_KEPT_MAX
) -> dict[int, float]:
    """The values at 1-based ``ranks`` of a stream of non-negative floats in any order,
    exact, calling ``feed`` (which must deliver the same values each time) once per
    narrowing pass and keeping at most ``kept_max`` values per window at once.
    Raises ``ValueError`` if a rank is beyond the stream (a replay that diverged)."""
    windows = {rank: _Window() for rank in set(ranks)}
    found: dict[int, float] = {}
    while len(found) < len(windows):
        tallies: dict[_Window, _Tally] = {}
        for rank, window in windows.items():
            if rank not in found and window not in tallies:
                tallies[window] = _Tally(window, kept_max)
        feed(_fan_out([tally.add for tally in tallies.values()]))
        for rank, window in list(windows.items()):
            if rank in found:
                continue
            value, narrower = _resolve(tallies[window], rank)
            if narrower is None:
                found[rank] = value
            else:
                windows[rank] = narrower
    return found


def _fan_out(adders: list[Callable[[float], None]]) -> Callable[[float], None]:
    def record(value: float) -> None:
        for add in adders:
            add(value)

    return record


def _resolve(tally: _Tally, rank: int) -> tuple[float, _Window | None]:
    """The value at ``rank`` if this pass pins it down, else the narrower window holding it."""
    local = rank - tally.below  # 1-based rank inside the window
    seen = 0
    for key in sorted(tally.buckets):
        count, low, high = tally.buckets[key]
        if seen + count < local:
            seen += int(count)
            continue
        if tally.kept is not None:  # the whole window fitted: sort it
            return sorted(tally.kept)[local - 1], None
        if low == high:  # every value in the bucket is the same
            return low, None
        window = tally.window
        return 0.0, _Window(targets=(*window.targets, key), spans=(*window.spans, (low, high)))
    raise ValueError(f"rank {rank} is beyond the {tally.below + seen} values fed "
                     "(a replay that diverged)")
