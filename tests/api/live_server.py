"""A real ``serve`` process for the live and browser tests: started on a free port of
127.0.0.1 in a session of its own, watched until ``/healthz`` answers, stopped with SIGTERM.

Waits poll with a bound and fail with what the server printed, never a fixed sleep.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from sms_sim.clock import RealClock
from tests.conftest import START

__all__ = ["LiveServer", "free_port", "live_server", "eventually", "START_TIMEOUT_S"]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
POLL_S = 0.05


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def eventually(check: Callable[[], bool], *, timeout_s: float, what: str,
               detail: Callable[[], str] = lambda: "") -> None:
    """Poll ``check`` every ``POLL_S`` until it is true; ``AssertionError`` naming ``what``
    (and ``detail()``) once ``timeout_s`` has passed."""
    clock, pause = RealClock(), threading.Event()
    deadline = clock.monotonic() + timeout_s
    while not check():
        if clock.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s\n{detail()}")
        clock.sleep(POLL_S, pause)


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    url: str
    directory: Path

    @property
    def output(self) -> str:
        """What the server (and its worker) printed so far: stdout, then stderr."""
        return "\n".join((self.directory / name).read_text(errors="replace")
                         for name in ("serve.out", "serve.err"))

    @property
    def worker_pid(self) -> int | None:
        found = re.search(r"worker pid (\d+)", (self.directory / "serve.out").read_text())
        return None if found is None else int(found.group(1))

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` to the server process and wait for it; its exit code."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve did not exit within {STOP_TIMEOUT_S:g} s of "
                                 f"signal {signum}\n{self.output}") from None


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def live_server(directory: Path, *arguments: str) -> Iterator[LiveServer]:
    """``serve --db DIRECTORY/d.db --port FREE ARGUMENTS...`` until ``/healthz`` answers.
    Leaving the block kills whatever is still running (a test that stops the server
    itself has already asserted how it ended)."""
    port = free_port()
    with open(directory / "serve.out", "wb") as out, open(directory / "serve.err", "wb") as err:
        process = subprocess.Popen(
            [*START, "serve", "--db", str(directory / "d.db"), "--port", str(port), *arguments],
            stdout=out, stderr=err, cwd=directory, start_new_session=True)
    server = LiveServer(process=process, url=f"http://127.0.0.1:{port}", directory=directory)
    try:
        eventually(lambda: process.poll() is not None or _answers(server.url),
                   timeout_s=START_TIMEOUT_S, what="serve answering /healthz",
                   detail=lambda: server.output)
        assert process.poll() is None, f"serve exited {process.returncode}\n{server.output}"
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the worker gets SIGTERM as serve dies
            process.wait(timeout=STOP_TIMEOUT_S)
