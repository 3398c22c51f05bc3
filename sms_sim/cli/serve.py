"""The ``serve`` command: the HTTP API under uvicorn and, with ``--with-worker``, a dispatch
worker beside it, so one command gives a newcomer a working service.

The app is built by uvicorn from the factory ``sms_sim.api:app_from_environment`` with the
store URL in ``SMS_SIM_STORE_URL``, so ``--workers N`` (N server processes, each building its
own app) works the same as one. This module binds the listening socket itself before
handing it to uvicorn: a port in use or an address that is not this machine's is then one
line of ours and an exit code, not a logged traceback.

The worker is a child process (``python -m sms_sim worker --db DB ...``) in a process group
of its own, and every SIGINT/SIGTERM that ``serve`` receives is passed on to it exactly
once: in the same group, a Ctrl-C in the terminal (which signals the whole foreground group)
would reach it twice, directly and forwarded, and a second signal tells a worker to abort
its sends instead of finishing them. It also gets SIGTERM if ``serve`` itself dies
(Linux's parent-death signal), so it is never left running alone. Shutdown order: the
server first (in-flight requests finish, up to ``--shutdown-grace``), then the worker
(sends in flight finish); a worker that dies while the server runs stops the server.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import errno
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from sms_sim.api import STORE_URL_VARIABLE, ExtrasMissingError, create_app
from sms_sim.cli.common import ExitCode, configure_logging, emit, int_at_least
from sms_sim.cli.store_command import Access, base_parser, open_for
from sms_sim.dispatch.stores import display_url
from sms_sim.errors import SmsSimError

__all__ = ["main", "APP_FACTORY", "WITH_WORKER", "CutShortFilter"]

log = logging.getLogger(__name__)

APP_FACTORY = "sms_sim.api:app_from_environment"  # reads STORE_URL_VARIABLE
WITH_WORKER = "--with-worker"
WORKERS_MAX = 64
_FORWARDED = (signal.SIGINT, signal.SIGTERM)
# What uvicorn's process supervisor (--workers > 1) takes over.
_SUPERVISOR_SIGNALS = tuple(getattr(signal, name) for name in
                            ("SIGINT", "SIGTERM", "SIGHUP", "SIGTTIN", "SIGTTOU")
                            if hasattr(signal, name))
# Worker options that serve decides: the database is serve's, and a worker that exits when
# idle would leave the API accepting messages that nothing sends.
_WORKER_REFUSED = {
    "--db": "--db is serve's own option: the worker uses the same database",
    "--exit-when-idle": "--exit-when-idle does not go with serve: the worker would exit "
                        "while the API still accepts messages",
}
# How a worker that was asked to stop may end without that being a failure.
_STOPPED_CODES = frozenset({ExitCode.OK, ExitCode.SIGINT, ExitCode.SIGTERM})
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class _MissingExtraError(Exception):
    """uvicorn or FastAPI is not installed."""


@dataclass(frozen=True, slots=True)
class _Listener:
    """The bound socket and how to name it in the first line."""

    sock: socket.socket
    url: str


def main(argv: Sequence[str], *, prog: str) -> int:
    """The ``serve`` command: parse, bind, create the store if missing, start the worker
    child if asked, run uvicorn until a signal, stop the worker, exit code."""
    own, worker_args = _split(argv)
    parser = _parser(prog)
    if worker_args is not None and {"-h", "--help"} & set(worker_args):
        from sms_sim.cli import worker

        return worker.main(["--help"], prog=f"{prog} {WITH_WORKER}")
    args = parser.parse_args(own)
    if worker_args is not None:
        for argument in worker_args:
            refusal = _WORKER_REFUSED.get(argument.split("=", 1)[0])
            if refusal is not None:
                parser.error(refusal)
    family, address = _resolve(parser, args.host, args.port)
    configure_logging(args.verbose)
    try:
        _load_server(args.db)
    except _MissingExtraError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        listener = _listen(family, address, args.host, args.port)
    except _BindError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.code
    with listener.sock:
        try:
            # Like init: a newcomer's first command is serve --with-worker, and the worker
            # (rightly) refuses a database that does not exist.
            open_for(args.db, Access.CREATE).close()
        except SmsSimError as exc:
            log.debug("store refused", exc_info=True)
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return ExitCode.ERROR
        os.environ[STORE_URL_VARIABLE] = args.db  # read by the app factory in each process
        return _run(prog, args, listener, worker_args)


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = base_parser(prog, "Serve the HTTP API (/v1, /docs, /healthz, /readyz, /metrics) "
                               "and the operator dashboard (/) over --db, which is created if "
                               "missing. Stops gracefully on SIGINT/SIGTERM: requests in "
                               "flight finish, then the worker's sends in flight.")
    parser.usage = (f"{prog} [--db DB] [--host HOST] [--port PORT] [--workers N] "
                    f"[--shutdown-grace SECONDS] [-v] [{WITH_WORKER} [WORKER OPTIONS ...]]")
    parser.epilog = (
        f"{WITH_WORKER}: also run a dispatch worker on the same database, as a child process "
        f"that stops with the server. Every option after {WITH_WORKER} is the worker's (see "
        f"'{prog} {WITH_WORKER} --help' or 'worker --help'), e.g. {WITH_WORKER} --senders 8 "
        "--ledger ledger.db --quiet; --db is serve's and --exit-when-idle is refused. "
        "Exit codes: 0 stopped by SIGINT/SIGTERM (the usual way a service ends) with both "
        "parts stopping cleanly, 1 store error, port in use, server or worker failure (a "
        "failed worker's own code when it has one), 2 bad usage or the api extra missing, "
        "3 worker threads did not stop.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 for every interface (default "
                             "127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int_at_least(1, 65535), default=8000,
                        help="TCP port (default 8000)")
    parser.add_argument("--workers", type=int_at_least(1, WORKERS_MAX), default=1,
                        metavar="N", help="server processes sharing the port (default 1)")
    parser.add_argument("--shutdown-grace", type=int_at_least(1), default=30,
                        metavar="SECONDS", help="longest wait for requests in flight once "
                                                "asked to stop (default 30)")
    return parser


def _split(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """serve's own arguments, and the worker's (None without ``--with-worker``)."""
    arguments = list(argv)
    if WITH_WORKER not in arguments:
        return arguments, None
    at = arguments.index(WITH_WORKER)
    return arguments[:at], arguments[at + 1:]


_Address = tuple[object, ...]  # a socket address as getaddrinfo gives it (IPv4 or IPv6)


def _resolve(parser: argparse.ArgumentParser, host: str,
             port: int) -> tuple[socket.AddressFamily, _Address]:
    """The family and socket address of ``host``; a usage error if it names none."""
    if not host.strip():
        parser.error("argument --host: give an address (127.0.0.1: this machine only; "
                     "0.0.0.0: every interface)")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        parser.error(f"argument --host: cannot resolve {host!r} ({reason})")
    family, _, _, _, address = found[0]
    return family, address


class _BindError(Exception):
    """The socket could not be bound; ``code`` is the exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message, code)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


def _listen(family: socket.AddressFamily, address: _Address, host: str, port: int) -> _Listener:
    """Bind (not listen: uvicorn does, once its app is ready) with SO_REUSEADDR, as uvicorn
    would, so a restart is not refused for the old connections still in TIME_WAIT.

    The protocol is named (IPPROTO_TCP, not 0): asyncio turns Nagle's algorithm off
    (TCP_NODELAY) only on sockets whose protocol says TCP, and with it on every answer on a
    kept-alive connection waited for the client's delayed ACK, about 44 ms per request."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise _BindError(f"port {port} on {host} is already in use (another server? "
                             "choose another --port)", ExitCode.ERROR) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise _BindError(f"argument --host: {host!r} is not an address of this machine",
                             ExitCode.USAGE) from None
        if exc.errno == errno.EACCES:
            raise _BindError(f"not allowed to listen on port {port} (ports below 1024 need "
                             "root)", ExitCode.ERROR) from None
        raise _BindError(f"cannot listen on {host} port {port}: {exc.strerror or exc}",
                         ExitCode.ERROR) from None
    sock.set_inheritable(True)  # the server processes of --workers N share it
    shown = f"[{host}]" if ":" in host else host
    return _Listener(sock=sock, url=f"http://{shown}:{sock.getsockname()[1]}")


def _load_server(store_url: str) -> None:
    """Import uvicorn and build the app once (cheap: the store opens only when the app
    starts), so a missing extra is found here, before anything is bound or created;
    ``_MissingExtraError`` says what to install."""
    try:
        importlib.import_module("uvicorn")
    except ModuleNotFoundError as exc:
        raise _MissingExtraError(f"the HTTP API needs the api extra ({exc.name} is missing): "
                                 "install sms_sim[api]") from exc
    try:
        create_app(store_url)
    except ExtrasMissingError as exc:
        raise _MissingExtraError(str(exc)) from exc


class _WorkerChild:
    """The ``worker`` child: started in its own process group, signalled only by us."""

    def __init__(self, db: str, arguments: Sequence[str]) -> None:
        command = [sys.executable, "-m", "sms_sim", "worker", "--db", db, *arguments]
        # The same sms_sim as ours, installed or not (start.py run from a checkout).
        package_root = str(Path(__file__).resolve().parents[2])  # holds sms_sim/
        path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": path},
                                        process_group=0, preexec_fn=_die_with_parent)
        self.stopping = False  # we told it to stop; its exit is then expected
        self.ended_unasked = False  # it exited before we told it to stop
        self._watch: threading.Thread | None = None

    def forward(self, signum: int) -> None:
        """Pass ``signum`` on (from a signal handler: nothing here blocks)."""
        self.stopping = True
        if self.process.returncode is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:  # exited and not yet reaped
                pass

    def watch(self, on_unexpected_exit: Callable[[], None]) -> None:
        """Call ``on_unexpected_exit`` (from a thread) if the worker ends unasked."""
        def wait() -> None:
            self.process.wait()
            if not self.stopping:
                self.ended_unasked = True
                on_unexpected_exit()

        self._watch = threading.Thread(target=wait, name="worker-watch", daemon=True)
        self._watch.start()

    def wait(self) -> int:
        """Wait for the worker to end (signal handlers still run meanwhile)."""
        code = self.process.wait()
        if self._watch is not None:
            self._watch.join()
        return code


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when serve's process dies, however it dies."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Forwarder:
    """serve's SIGINT/SIGTERM handler outside uvicorn's: records each signal and passes it
    on to the worker. uvicorn's one-process server puts it back when it stops and raises
    the signals it caught again, which is how the worker hears of them."""

    def __init__(self, child: _WorkerChild | None) -> None:
        self.child = child
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for signum in _FORWARDED:
            self._previous[signum] = signal.signal(signum, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.child is not None:
            self.child.forward(signum)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()


def _run(prog: str, args: argparse.Namespace, listener: _Listener,
         worker_args: list[str] | None) -> int:
    forwarder = _Forwarder(None)
    forwarder.install()  # a signal from now on is recorded, not fatal
    child: _WorkerChild | None = None
    try:
        if worker_args is not None and not forwarder.received:
            child = _WorkerChild(args.db, worker_args)
            forwarder.child = child
        processes = "1 process" if args.workers == 1 else f"{args.workers} processes"
        worker_note = "" if child is None else f"; worker pid {child.process.pid}"
        emit(f"serving {listener.url} from {display_url(args.db)} ({processes}; API docs "
             f"{listener.url}/docs, dashboard {listener.url}/{worker_note})")
        server_ok = True
        if not forwarder.received:
            server_ok = _serve(args, listener, child)
        if child is None:
            return ExitCode.OK if server_ok else ExitCode.ERROR
        if not child.stopping:  # the server stopped without passing a signal on (the
            child.forward(signal.SIGTERM)  # supervisor of --workers N swallows them)
        code = child.wait()
        if child.ended_unasked:
            print(f"{prog}: error: the worker exited (code {code}) while the server ran; "
                  "server stopped", file=sys.stderr)
        return _exit_code(server_ok, code, asked=not child.ended_unasked)
    finally:
        if child is not None and child.process.returncode is None:
            child.forward(signal.SIGTERM)  # an unexpected error here: never leave it behind
            child.wait()
        forwarder.restore()


class CutShortFilter(logging.Filter):
    """Turns the traceback uvicorn logs when a second signal stops it at once into one line.

    On a second Ctrl-C uvicorn skips the app's shutdown and cancels its tasks; Starlette then
    reports the cancelled lifespan as a failure with the ``CancelledError`` traceback. That
    is the operator's own request, not a fault: one warning line says what it cost. Given
    to uvicorn by name in its logging configuration, so every server process (``--workers
    N`` starts fresh ones) installs it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno >= logging.ERROR and "CancelledError" in message:
            record.msg, record.args = "stopped at once by a second signal: requests in " \
                                      "flight were cut off", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def _log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with ``CutShortFilter`` on its error stream."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["cut_short"] = {"()": f"{__name__}.CutShortFilter"}
    config["handlers"]["default"].setdefault("filters", []).append("cut_short")
    return config


def _serve(args: argparse.Namespace, listener: _Listener, child: _WorkerChild | None) -> bool:
    """Run uvicorn until it is stopped; False if it failed (it has logged why)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        APP_FACTORY, factory=True, host=args.host, port=args.port, workers=args.workers,
        log_level="debug" if args.verbose else "info", log_config=_log_config(),
        timeout_graceful_shutdown=args.shutdown_grace)
    try:
        if args.workers == 1:
            server = uvicorn.Server(config)
            if child is not None:
                child.watch(lambda: setattr(server, "should_exit", True))
            server.run(sockets=[listener.sock])
            return bool(server.started)
        # The supervisor takes these signals over and never gives them back.
        saved = {signum: signal.getsignal(signum) for signum in _SUPERVISOR_SIGNALS}
        try:
            supervisor = Multiprocess(config, sockets=[listener.sock])
            if child is not None:
                child.watch(supervisor.should_exit.set)
            supervisor.run()
        finally:
            for signum, handler in saved.items():
                if handler is not None:
                    signal.signal(signum, handler)
        return True
    except SystemExit as exc:  # uvicorn exits 3 when the app fails to start; it logged why
        return exc.code in (None, 0)


def _exit_code(server_ok: bool, worker_code: int, *, asked: bool) -> int:
    """0 when both stopped cleanly; else the worker's failure, or 1 for the server's."""
    if asked and worker_code in _STOPPED_CODES:
        return ExitCode.OK if server_ok else ExitCode.ERROR
    if worker_code < 0:  # killed by a signal it did not handle
        return 128 - worker_code
    return worker_code or ExitCode.ERROR
