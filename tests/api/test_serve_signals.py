"""A second Ctrl-C stops ``serve`` at once and quietly: one line saying requests in flight
were cut off, never the traceback of the app's cancelled lifespan that uvicorn logs."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.api.live_server import STOP_TIMEOUT_S, eventually, live_server


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_sigint_exits_without_a_traceback(tmp_path: Path, workers: str) -> None:
    with live_server(tmp_path, "--workers", workers) as server:
        server.process.send_signal(signal.SIGINT)
        # The second signal while the first shutdown is under way (uvicorn logs it first).
        eventually(lambda: "Shutting down" in server.output, timeout_s=STOP_TIMEOUT_S,
                   what="serve shutting down", detail=lambda: server.output)
        server.process.send_signal(signal.SIGINT)
        code = server.process.wait(timeout=STOP_TIMEOUT_S)
        # uvicorn's children log as they end, after the supervisor may already have exited.
        time.sleep(0.5)
        output = server.output
    assert "Traceback" not in output and "CancelledError" not in output, output
    assert code in (0, 130), output
