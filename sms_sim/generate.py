"""Seeded, uniform, fast generation of valid messages.

Uniformity without modulo bias comes from rejection sampling done in C: random bytes are
passed through ``bytes.translate``, which maps each accepted byte to its symbol and deletes
the bytes above the largest multiple of the alphabet size. Generating in blocks this way is
several times faster than ``random.choices`` per message, which keeps the producer from
being the bottleneck.
"""

from __future__ import annotations

import random
import itertools
from collections.abc import Iterable, Iterator

from sms_sim.config import Content
from sms_sim.model import TEXT_MAX_CHARS, TEXT_MIN_CHARS, Message, trusted_message
from sms_sim.segments import segments

__all__ = ["generate_messages", "new_seed", "PRINTABLE_ASCII", "DIGITS", "segment_counts"]

PRINTABLE_ASCII = "".join(chr(code) for code in range(32, 127))
DIGITS = "0123456789"
_LENGTHS = "".join(chr(n) for n in range(TEXT_MIN_CHARS, TEXT_MAX_CHARS + 1))
_BLOCK_BYTES = 1 << 16
_BLOCK_MESSAGES = 512


class _UniformSymbols:
    """An endless supply of symbols drawn uniformly from ``alphabet`` (at most 256 of them)."""

    def __init__(self, rng: random.Random, alphabet: str) -> None:
        size = len(alphabet)
        accepted = 256 - 256 % size  # bytes >= accepted would bias the low symbols
        encoded = alphabet.encode("latin-1")
        self._table = bytes(encoded[b % size] for b in range(256))
        self._rejected = bytes(range(accepted, 256))
        self._rng = rng
        self._buffer = ""
        self._pos = 0

    def take(self, count: int) -> str:
        end = self._pos + count
        while end > len(self._buffer):
            self._refill()
            end = self._pos + count
        chunk = self._buffer[self._pos:end]
        self._pos = end
        return chunk

    def _refill(self) -> None:
        block = self._rng.randbytes(_BLOCK_BYTES).translate(self._table, self._rejected)
        self._buffer = self._buffer[self._pos:] + block.decode("latin-1")
        self._pos = 0


def new_seed() -> int:
    """A fresh 63-bit seed from the OS, for runs that were not given one."""
    return random.SystemRandom().getrandbits(63)


def generate_messages(count: int, seed: int | None = None) -> Iterator[Message]:
    """Yield ``count`` valid messages with ids 0..count-1, lazily (memory does not grow with count).

    Every phone digit, every text length 1-100 and every printable ASCII character is
    equally likely. The same ``seed`` yields the same messages; ``None`` draws a fresh seed.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0 (got {count!r})")
    rng = random.Random(new_seed() if seed is None else seed)
    digits = _UniformSymbols(rng, DIGITS)
    lengths = _UniformSymbols(rng, _LENGTHS)
    chars = _UniformSymbols(rng, PRINTABLE_ASCII)
    message_id = 0
    while message_id < count:
        # Draw a block of messages' worth of each symbol at once: three calls per block
        # instead of three per message, which is most of what generation used to cost.
        block = min(_BLOCK_MESSAGES, count - message_id)
        phone_digits = digits.take(10 * block)
        text_lengths = lengths.take(block).encode("latin-1")
        text = chars.take(sum(text_lengths))
        start = 0
        for index, length in enumerate(text_lengths):
            d = phone_digits[10 * index:10 * index + 10]
            end = start + length
            yield trusted_message(message_id, f"{d[:3]}-{d[3:6]}-{d[6:]}", text[start:end])
            start = end
            message_id += 1


def segment_counts(
    content: Content | None, count: int, seed: int, messages: Iterable[Message] | None = None
) -> Iterator[int]:
    """The segments of each of a run's messages, in id order, lazily: 1 each without a
    content spec (the model before issue 14), the fixed text's count with one, else the
    count of each message's own text: ``messages`` when given, otherwise the very messages
    ``generate_messages(count, seed)`` yields (so both modes count the same texts)."""
    if content is None:
        return itertools.repeat(1, count)
    fixed = content.fixed
    if fixed is not None:
        return itertools.repeat(fixed.count, count)
    source = generate_messages(count, seed) if messages is None else messages
    return (segments(message.text).count for message in source)
