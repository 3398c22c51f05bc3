"""Pieces shared by the HTTP API benches: a free port, a server started and stopped, an API key,
a keep-alive client, phone numbers, and a server process's memory and CPU time from ``/proc``.

Like ``_common`` it never imports ``sms_sim`` (nor FastAPI): the servers are child processes
(``python -m sms_sim serve``, or uvicorn for a bench's own app), and this process only talks
HTTP to them and reads their ``/proc/<pid>/status``.

The client is ``http.client`` rather than httpx: one ``HTTPConnection`` per thread keeps its
connection alive as long as each answer is read to the end, and it costs the client a small
fraction of what httpx does per request, which matters when client and server share two
cores: the figures should be the server's, not the client's.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import ROOT, cli_env, run_cli

HOST = "127.0.0.1"  # every server these benches start listens on this machine only
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_READY_POLL_S = 0.05
_STARTED_RE = re.compile(r"Started server process \[(\d+)\]")


def free_port() -> int:
    """A TCP port on ``HOST`` that nothing listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# ---- the client -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> dict[str, object]:
        found: dict[str, object] = json.loads(self.body)
        return found


class Client:
    """One keep-alive connection to ``HOST:port``; not for several threads at once."""

    def __init__(self, port: int, *, token: str | None = None, timeout_s: float = 60.0) -> None:
        self._conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
        self._headers = {} if token is None else {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Reply:
        """Send one request and read its whole answer (so the connection can be reused)."""
        self._conn.request(method, path, body=body, headers={**self._headers, **(headers or {})})
        response = self._conn.getresponse()
        return Reply(response.status, response.read())

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def expect(reply: Reply, status: int, doing: str) -> Reply:
    """``reply`` if its status is ``status``; else raise with the start of its body."""
    if reply.status != status:
        raise RuntimeError(f"{doing}: HTTP {reply.status}, expected {status}: "
                           f"{reply.body[:300]!r}")
    return reply


# ---- servers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """A running server: its process (the one we started), port and log file."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def handler_pids(self) -> list[int]:
        """The pids of the processes that answer requests, from uvicorn's "Started server
        process [pid]" lines: with one worker, uvicorn runs in ``serve``'s own process; with
        ``--workers N`` they are its children."""
        return [int(pid) for pid in _STARTED_RE.findall(self.log.read_text(errors="replace"))]

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def serve_command(db: Path, port: int, *, workers: int = 1,
                  worker_args: Sequence[str] | None = None) -> list[str]:
    """``python -m sms_sim serve`` on ``db`` at ``HOST:port`` (``--with-worker worker_args``
    when given)."""
    command = [sys.executable, "-m", "sms_sim", "serve", "--db", str(db), "--host", HOST,
               "--port", str(port), "--workers", str(workers)]
    if worker_args is not None:
        command += ["--with-worker", *worker_args]
    return command


@contextlib.contextmanager
def serving(command: Sequence[str], port: int, log: Path, *,
            clean_exits: Collection[int] = (0,)) -> Iterator[Server]:
    """Start ``command`` (a server on ``port``), wait until ``/healthz`` answers 200, yield
    it; then stop it: SIGTERM, up to ``STOP_TIMEOUT_S`` to exit, then SIGKILL to its whole
    process group (uvicorn's worker processes included), which it leads. Raises if its exit
    code is not one of ``clean_exits`` (after the body, unless the body raised)."""
    with log.open("wb") as out:
        process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT,
                                   cwd=ROOT, env=cli_env(ROOT),
                                   process_group=0)
    server = Server(process=process, port=port, log=log)
    try:
        _wait_ready(server)
        yield server
    except BaseException:
        stop_server(server)
        raise
    code = stop_server(server)
    if code not in clean_exits:
        raise RuntimeError(f"the server exited {code} when stopped:\n{server.log_tail()}")


def stop_server(server: Server) -> int:
    """SIGTERM, wait, SIGKILL the process group on timeout; the exit code."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited {server.process.returncode} before it "
                               f"answered:\n{server.log_tail()}")
        try:
            with Client(server.port, timeout_s=5) as client:
                if client.request("GET", "/healthz").status == 200:
                    return
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer from /healthz in {READY_TIMEOUT_S:g} s:\n"
                               f"{server.log_tail()}")
        time.sleep(_READY_POLL_S)


# ---- the database: what the CLI does before a server starts ---------------------------------


def create_key(db: Path, tenant: str) -> str:
    """A new API key's token for ``tenant`` (``apikey create --json``; ``db`` must exist)."""
    out = run_cli(ROOT, "apikey", "create", "--tenant", tenant, "--db", str(db), "--json",
                  cwd=db.parent)
    token: str = json.loads(out)["token"]
    return token


def init_db(db: Path) -> None:
    run_cli(ROOT, "init", "--db", str(db), cwd=db.parent)


def phone_numbers(count: int, area: int = 700) -> list[str]:
    """``count`` distinct numbers ``<area>-xxx-xxxx`` (the area counting up past 10**7)."""
    return [f"{area + i // 10**7:03d}-{i // 10**4 % 1000:03d}-{i % 10**4:04d}"
            for i in range(count)]


# ---- a process's memory and CPU time ---------------------------------------------------


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process ``pid`` has used so far, every thread of
    it, from ``/proc/<pid>/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``: resident now; ``VmHWM``: the
    process's resident high-water mark since it started or since ``reset_peak``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Set ``VmHWM`` back to the current RSS (``echo 5 > /proc/<pid>/clear_refs``, Linux
    4.0+); False where that is not allowed, and the mark then still counts from startup."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
