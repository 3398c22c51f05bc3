"""A product-output stream that survives its reader going away.

Progress lines and reports are written through ``SafeWriter`` so that a closed pipe (the
CLI piped into ``head``) ends the run quietly instead of raising from a worker.
"""

from __future__ import annotations

import errno
import logging
from typing import TextIO

__all__ = ["SafeWriter", "is_terminal", "reader_gone"]

log = logging.getLogger(__name__)


def reader_gone(exc: BaseException | None) -> bool:
    """Whether a failed write means the reader went away (``| head``): the usual end of a
    pipe, said nowhere, unlike a full disk."""
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class SafeWriter:
    """Writes and flushes text; after the first failed write it drops everything quietly.

    ``closed`` tells the caller the reader has gone, so it can stop doing work for nobody.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self.closed = False

    @property
    def is_terminal(self) -> bool:
        return self._stream is not None and is_terminal(self._stream)

    def write(self, text: str) -> bool:
        """Write ``text``; returns False if the stream is (now) closed."""
        if self._stream is None or self.closed:
            return not self.closed
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: a closed stream
            self.closed = True
            # A full disk is a failure the exit code alone (141) would leave unexplained.
            if isinstance(exc, OSError) and not reader_gone(exc):
                log.warning("the output could not be written (%s); the run stops",
                            exc.strerror or exc)
        return not self.closed
