"""A fake SMS provider for the tests: an HTTP server on 127.0.0.1 speaking the wire format of
``sms_sim.dispatch.http_provider``, with faults on demand and a ledger of every attempt.

It checks the bearer token (401 otherwise), deduplicates by ``Idempotency-Key`` (a repeat is
answered 200 with the same id and is not delivered again), and, counting the requests it
accepts for judging, answers every ``throttle_every``-th with 429 and ``Retry-After``, every
``fail_every``-th with 500 before taking the message, every ``ambiguous_every``-th with 500
*after* taking it (the answer lost: the retry must be absorbed by the key), and any request
to one of ``bad_numbers`` with 400 ``{"error": "invalid number"}``. What reached the phones
is kept by a ``MemoryProvider`` or, shared with other processes' readers, a
``LedgerProvider`` file (``dispatch/ledger.py``), so effective duplicates are counted the
same way as for the simulated providers; ``attempts`` lists every request with its answer.

Delivery receipts (optional, ``ReceiptCallback``): after each message taken, the fake POSTs
to a callback URL, in batches, with its own bearer token::

    POST <callback url>
    Authorization: Bearer <callback token>
    Content-Type: application/json
    {"receipts": [{"key": "<Idempotency-Key>", "status": "delivered",
                   "at": "<RFC 3339 time>"}]}

``body`` replaces that format (a function of the batch, returning bytes) and ``status`` the
status reported, so the API's ``POST /v1/provider/receipts`` can be wired whatever it reads.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self
from urllib.parse import urlsplit

from sms_sim.clock import Clock, RealClock
from sms_sim.dispatch.ledger import LedgerProvider
from sms_sim.dispatch.transport import LedgerSummary, MemoryProvider

__all__ = ["Attempt", "FakeProvider", "Faults", "Receipt", "ReceiptCallback", "write_token"]

TOKEN = "test-token-5f1c"  # the token the fixtures use; never a real one


def write_token(path: Path, token: str = TOKEN) -> Path:
    """Write ``token`` (with a newline, as editors leave it) to ``path``; returns the path."""
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


class _Ledger(Protocol):
    def send(self, key: str, recipient: str, content: str) -> None: ...

    def summary(self) -> LedgerSummary: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request the fake judged: when it arrived (epoch seconds, the fake's clock), its
    key and number, and the status it was answered with."""

    at: float
    key: str
    to: str
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Which requests fail, counted over those with a good token and body (0: never)."""

    throttle_every: int = 0
    retry_after: str = "1"  # the Retry-After header of a 429, as sent
    fail_every: int = 0  # 500, message not taken
    ambiguous_every: int = 0  # message taken, then 500: the client cannot know
    bad_numbers: frozenset[str] = frozenset()  # 400 {"error": "invalid number"}
    # Seconds each request takes before it is judged: a real provider's time, which the
    # worker no longer simulates beside one (``--mean`` is refused with ``--provider``).
    answer_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Receipt:
    key: str
    status: str
    at: float
    provider_id: str


def _default_body(receipts: Sequence[Receipt]) -> bytes:
    """The body ``POST /v1/provider/receipts`` takes: the time in RFC 3339, no provider id."""
    return json.dumps({"receipts": [
        {"key": r.key, "status": r.status,
         "at": datetime.fromtimestamp(r.at, timezone.utc).isoformat(timespec="milliseconds")}
        for r in receipts]}).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptCallback:
    """Where the fake reports receipts, and how (see the module docstring)."""

    url: str
    token: str = field(repr=False)
    status: str = "delivered"
    body: Callable[[Sequence[Receipt]], bytes] = _default_body
    batch_max: int = 100


_STOP: Final = object()


class FakeProvider:
    """The server and its state; ``start`` binds a free port on 127.0.0.1 and serves on a
    thread, ``stop`` shuts it down and joins it (a context manager does both)."""

    def __init__(self, *, token: str = TOKEN, clock: Clock | None = None,
                 faults: Faults | None = None, ledger_path: Path | None = None,
                 receipts: ReceiptCallback | None = None) -> None:
        self.token = token
        self.clock = clock or RealClock()
        self.faults = faults or Faults()
        self._ledger: _Ledger = (MemoryProvider() if ledger_path is None
                                 else LedgerProvider(ledger_path, clock=self.clock))
        self._lock = threading.Lock()
        self._attempts: list[Attempt] = []
        self._judged = 0
        self._taken: set[str] = set()
        self._receipts = receipts
        self._outbox: queue.SimpleQueue[Receipt | object] = queue.SimpleQueue()
        self.receipt_posts: list[tuple[int, int]] = []  # (HTTP status or 0, receipts)
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1/messages"

    def start(self) -> Self:
        self._threads.append(threading.Thread(target=self._server.serve_forever,
                                              name="fake-provider", daemon=True))
        if self._receipts is not None:
            self._threads.append(threading.Thread(target=self._post_receipts,
                                                  name="fake-receipts", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._outbox.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=10)
            assert not thread.is_alive(), thread.name
        if isinstance(self._ledger, LedgerProvider):
            self._ledger.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        return self._server.connections

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    def summary(self) -> LedgerSummary:
        return self._ledger.summary()

    def answer(self, authorization: str | None, key: str | None,
               raw: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
        """(status, extra headers, JSON body) for one request; records the attempt."""
        if authorization != f"Bearer {self.token}":
            return 401, {}, {"error": "bad token"}
        try:
            request = json.loads(raw)
            to, body = str(request["to"]), str(request["body"])
        except (ValueError, KeyError, TypeError):
            return 400, {}, {"error": "body must be JSON with to, body and key"}
        if not key or request.get("key") != key:
            return 400, {}, {"error": "Idempotency-Key missing or not the body's key"}
        faults, now = self.faults, self.clock.now()
        with self._lock:
            self._judged += 1
            n = self._judged
            provider_id = "fp-" + hashlib.sha256(key.encode()).hexdigest()[:16]
            if to in faults.bad_numbers:
                status, headers, reply = 400, {}, {"error": "invalid number"}
            elif _every(n, faults.throttle_every):
                status, headers = 429, {"Retry-After": faults.retry_after}
                reply = {"error": "too many requests"}
            elif _every(n, faults.fail_every):
                status, headers, reply = 500, {}, {"error": "internal error"}
            else:
                # Taken: the ledger delivers it unless the key is known (then it absorbs it).
                self._ledger.send(key, to, body)
                if key not in self._taken:
                    self._taken.add(key)
                    if self._receipts is not None:
                        self._outbox.put(Receipt(key, self._receipts.status, now, provider_id))
                if _every(n, faults.ambiguous_every):
                    status, headers, reply = 500, {}, {"error": "internal error after accept"}
                else:
                    status, headers, reply = 200, {}, {"id": provider_id}
            self._attempts.append(Attempt(now, key, to, status))
        return status, headers, reply

    def _post_receipts(self) -> None:
        """Send receipts in batches of what has queued up, until ``stop``."""
        callback = self._receipts
        assert callback is not None
        while True:
            batch: list[Receipt] = []
            item = self._outbox.get()
            while item is not _STOP:
                assert isinstance(item, Receipt)
                batch.append(item)
                if len(batch) >= callback.batch_max:
                    break
                try:
                    item = self._outbox.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self.receipt_posts.append((_post(callback, batch), len(batch)))
            if item is _STOP:
                return


def _post(callback: ReceiptCallback, batch: Sequence[Receipt]) -> int:
    """POST one batch; the answer's status, or 0 if the callback could not be reached."""
    parts = urlsplit(callback.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("POST", parts.path or "/", body=callback.body(batch),
                     headers={"Authorization": f"Bearer {callback.token}",
                              "Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def _every(n: int, every: int) -> bool:
    return every > 0 and n % every == 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 fake: FakeProvider) -> None:
        super().__init__(address, handler)
        self.fake = fake
        self.connections = 0  # accepted: a client that keeps connections alive makes few

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a worker killed mid-request (the chaos test) is expected, not a bug."""

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1  # only the serving thread accepts
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the adapter expects
    # The status line and headers go out in one write, the body in another: with Nagle's
    # algorithm on, the body waited for the client's delayed ACK, 40 ms per request.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802 -- http.server's name
        assert isinstance(self.server, _Server)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.server.fake.faults.answer_after_s:
            time.sleep(self.server.fake.faults.answer_after_s)
        status, headers, reply = self.server.fake.answer(
            self.headers.get("Authorization"), self.headers.get("Idempotency-Key"), raw)
        data = json.dumps(reply).encode()
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the worker was killed mid-request: nothing to answer
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- its name
        """Quiet: the tests read ``attempts``, not a request log."""
