"""Generation: always valid, reproducible by seed, and uniform (checked statistically).

Uniformity is a chi-square goodness-of-fit test on a fixed seed. The critical value is the
0.999 quantile of the chi-square distribution with k-1 degrees of freedom, from the
Wilson-Hilferty approximation (accurate to well under 1 % for k >= 10). With a fixed seed the
test is deterministic; the threshold says how unlikely the observed counts would be from a
truly uniform source (p < 0.001), so a modulo bias such as mapping 256 byte values onto 95
characters (the first 66 characters ~50 % more likely) fails it by a wide margin.
"""

from __future__ import annotations

import collections
import itertools
import math
import re

from sms_sim import Message, generate_messages
from sms_sim.generate import DIGITS, PRINTABLE_ASCII

_Z_0_999 = 3.0902  # standard normal 0.999 quantile


def chi2_critical_0_999(df: int) -> float:
    """Wilson-Hilferty approximation of the chi-square 0.999 quantile."""
    a = 2 / (9 * df)
    return float(df * (1 - a + _Z_0_999 * math.sqrt(a)) ** 3)


def chi2_uniform(counts: collections.Counter[str] | collections.Counter[int], k: int) -> float:
    total = sum(counts.values())
    expected = total / k
    observed = list(counts.values()) + [0] * (k - len(counts))
    return sum((o - expected) ** 2 / expected for o in observed)


def test_messages_are_valid_and_ids_sequential() -> None:
    messages = list(generate_messages(2000, seed=5))
    assert [m.id for m in messages] == list(range(2000))
    for message in messages:
        assert re.fullmatch(r"[0-9]{3}-[0-9]{3}-[0-9]{4}", message.phone)
        assert 1 <= len(message.text) <= 100
        assert all(32 <= ord(ch) <= 126 for ch in message.text)
        assert isinstance(message, Message)


def test_same_seed_same_messages_different_seed_different() -> None:
    assert list(generate_messages(500, seed=42)) == list(generate_messages(500, seed=42))
    assert list(generate_messages(50, seed=42)) != list(generate_messages(50, seed=43))


def test_prefix_is_stable_whatever_the_count() -> None:
    """A longer run with the same seed starts with the shorter run's messages."""
    short = list(generate_messages(100, seed=9))
    long = list(itertools.islice(generate_messages(10_000, seed=9), 100))
    assert short == long


def test_zero_messages_and_unseeded_generation() -> None:
    assert list(generate_messages(0, seed=1)) == []
    assert len(list(generate_messages(3))) == 3


def test_every_length_1_to_100_is_equally_likely() -> None:
    lengths = collections.Counter(len(m.text) for m in generate_messages(50_000, seed=11))
    assert set(lengths) == set(range(1, 101))
    assert chi2_uniform(lengths, 100) < chi2_critical_0_999(99)


def test_every_character_is_equally_likely() -> None:
    chars: collections.Counter[str] = collections.Counter()
    for message in generate_messages(5_000, seed=12):
        chars.update(message.text)
    assert set(chars) == set(PRINTABLE_ASCII)
    assert chi2_uniform(chars, 95) < chi2_critical_0_999(94)


def test_every_digit_in_every_position_is_equally_likely() -> None:
    per_position = [collections.Counter[str]() for _ in range(10)]
    for message in generate_messages(20_000, seed=13):
        digits = message.phone.replace("-", "")
        for position, digit in enumerate(digits):
            per_position[position][digit] += 1
    for counts in per_position:
        assert set(counts) == set(DIGITS)
        assert chi2_uniform(counts, 10) < chi2_critical_0_999(9)


def test_the_uniformity_check_can_fail_on_a_modulo_bias() -> None:
    """The same statistic rejects the classic biased mapping, so the tests above can fail."""
    import random

    rng = random.Random(1)
    biased = collections.Counter(PRINTABLE_ASCII[b % 95] for b in rng.randbytes(200_000))
    assert chi2_uniform(biased, 95) > chi2_critical_0_999(94)
