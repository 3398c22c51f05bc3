"""A scripted stand-in for the CLI's signal recorder: stop requests that arrive on a given poll."""

from __future__ import annotations

__all__ = ["StopAfterPolls"]


class StopAfterPolls:
    """Callable for ``stop_requests``: 0 requests for the first ``polls`` polls, then
    ``requests`` (1 = a stop, 2 = a stop and a second signal). ``polls=None`` never stops."""

    def __init__(self, polls: int | None, requests: int = 1) -> None:
        self._polls = polls
        self._requests = requests
        self.count = 0

    def __call__(self) -> int:
        self.count += 1
        if self._polls is None or self.count <= self._polls:
            return 0
        return self._requests
