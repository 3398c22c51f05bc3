"""The worker sending through the HTTP adapter to the fake provider on 127.0.0.1: throttles,
5xx (before and after the provider took the message) and a permanently bad number, end to
end; then the ``worker --provider`` command line, its refusals, and the fake's receipts.

Real threads and sockets; the throttle's Retry-After is 1 s, so a run takes a few seconds.
The timing checks compare the fake's own timestamps (ordering, not elapsed time).
"""

from __future__ import annotations

import io
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sms_sim.clock import RealClock
from sms_sim.config import RetryPolicy, SenderConfig
from sms_sim.dispatch.contract import DeliveryStatus
from sms_sim.dispatch.dispatcher import DispatchConfig
from sms_sim.dispatch.http_provider import HttpProvider, ProviderEndpoint
from sms_sim.dispatch.requests import NewMessage
from sms_sim.dispatch.stores import SqliteStore
from sms_sim.dispatch.worker import Worker, format_worker_report
from sms_sim.report import StopReason
from tests.conftest import phones
from tests.fake_provider import TOKEN, FakeProvider, Faults, ReceiptCallback, write_token
from tests.integration.conftest import Cli

# Real threads, processes or wall-clock waits (STYLE.md section 10).
pytestmark = pytest.mark.slow

SENDERS = 4


def test_worker_through_the_fake_provider_sends_or_kills_every_recipient_once(
        tmp_path: Path) -> None:
    clock = RealClock()
    store = SqliteStore(tmp_path / "w.db")
    numbers = phones(300)
    bad = numbers[17]
    store.submit(NewMessage.validated(content="alert", recipients=numbers), clock.now())
    faults = Faults(throttle_every=97, retry_after="1", fail_every=13, ambiguous_every=29,
                    bad_numbers=frozenset({bad}))
    config = DispatchConfig(batch_size=50, retry=RetryPolicy(max_attempts=10, base_s=0.01,
                                                             cap_s=0.05))
    with FakeProvider(faults=faults) as fake:
        provider = HttpProvider(ProviderEndpoint(url=fake.url, token=TOKEN, timeout_s=10),
                                clock=clock)
        worker = Worker(store, provider, senders=[SenderConfig(0.0, 0.0, 0.0)] * SENDERS,
                        clock=clock, seed=3, config=config, output=io.StringIO(),
                        interval_s=60.0, exit_when_idle=True)
        try:
            report = worker.run()
        finally:
            provider.close()
    assert report.stopped_by is StopReason.COMPLETED and report.threads_alive == ()
    assert report.is_accounted
    deliveries = store.deliveries(limit=10_000)
    store.close()
    assert {d.recipient for d in deliveries if d.status is DeliveryStatus.DEAD} == {bad}
    assert {d.status for d in deliveries} == {DeliveryStatus.SENT, DeliveryStatus.DEAD}
    (dead,) = [d for d in deliveries if d.recipient == bad]
    assert (dead.attempts, dead.last_error) == (1, "permanent: HTTP 400: invalid number")

    attempts = fake.attempts
    assert [a.to for a in attempts].count(bad) == 1  # one attempt, never retried
    by_key: defaultdict[str, list[tuple[float, int]]] = defaultdict(list)
    for attempt in attempts:
        by_key[attempt.key].append((attempt.at, attempt.status))
    throttles = [(a.at, a.key) for a in attempts if a.status == 429]
    assert throttles and any(a.status == 500 for a in attempts)
    for at, key in throttles:  # the throttled delivery waits out its Retry-After...
        later = [t for t, _ in by_key[key] if t > at]
        assert later and min(later) >= at + 1.0
    # ...and so does the route: with the gate closed no new send starts on any sender, so
    # past the moment it takes to close (generously 0.3 s) at most the sends already on
    # their way arrive; without the gate hundreds would.
    for at, _ in throttles:
        during = [a for a in attempts if at + 0.3 < a.at < at + 1.0]
        assert len(during) <= SENDERS, during
    summary = fake.summary()
    assert summary.effective_duplicates == 0
    assert summary.recipients_delivered == len(numbers) - 1 == report.sent
    assert summary.absorbed >= 1  # a retry after "500 after taking it" found the key known
    assert report.throttles == worker.dispatcher.gate.closures >= 1
    assert "provider: throttled" in format_worker_report(report)


def test_worker_command_line_through_the_provider(cli: Cli, tmp_path: Path) -> None:
    token = write_token(tmp_path / "provider.token")
    assert cli("submit", "hello", "--to", "555-000-0001,555-000-0002,555-000-0003").code == 0
    with FakeProvider(faults=Faults(bad_numbers=frozenset({"555-000-0002"}))) as fake:
        ran = cli("worker", "--provider", fake.url, "--provider-token-file", str(token),
                  "--provider-timeout", "5", "--exit-when-idle", "--quiet", "--json")
    assert ran.code == 0, ran.err
    report = json.loads(ran.out)
    assert (report["sent"], report["dead"], report["retried"], report["throttles"]) == (
        2, 1, 0, 0)
    assert f"to {fake.url} with 4 senders" in ran.err
    assert TOKEN not in ran.out + ran.err
    assert fake.summary().recipients_delivered == 2
    assert len(fake.attempts) == 3


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--provider", "http://sms.example.com/v1", "--provider-token-file", "t"],
     "plain http only to 127.0.0.1 or localhost"),
    (["--provider", "https://sms.example.com/v1"], "--provider needs --provider-token-file"),
    (["--provider-token-file", "t"], "--provider-token-file needs --provider"),
    (["--provider", "https://sms.example.com/v1", "--provider-token-file", "missing"],
     "cannot read provider token file 'missing'"),
    (["--provider", "https://sms.example.com/v1", "--provider-token-file", "empty"],
     "provider token file 'empty' is empty"),
    (["--provider", "https://sms.example.com/v1", "--provider-token-file", "t",
      "--failure-rate", "0.1"], "with --provider the provider's answers decide"),
    (["--provider", "https://sms.example.com/v1", "--provider-token-file", "t",
      "--ledger", "l.db"], "--ledger is the simulated provider's; not with --provider"),
    (["--provider", "https://u:s3cr3t@sms.example.com/", "--provider-token-file", "t"],
     "must not carry credentials"),
])
def test_bad_provider_options_are_one_line_and_exit_2(cli: Cli, tmp_path: Path,
                                                      extra: list[str], fragment: str) -> None:
    write_token(tmp_path / "t", "s3cr3t")
    (tmp_path / "empty").write_text("\n")
    ran = cli("worker", "--exit-when-idle", *extra)
    assert ran.code == 2
    assert fragment in ran.err and len(ran.err.strip().splitlines()) == 1, ran.err
    assert "s3cr3t" not in ran.out + ran.err


class _ReceiptSink(ThreadingHTTPServer):
    """Where the fake's receipts go (the API's endpoint, in the real setup): records what
    it got and with which Authorization."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.posts: list[tuple[str | None, object]] = []


class _SinkHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 -- http.server's name
        assert isinstance(self.server, _ReceiptSink)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.posts.append((self.headers.get("Authorization"), json.loads(raw)))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- its name
        """Quiet."""


@pytest.fixture
def sink() -> Iterator[_ReceiptSink]:
    server = _ReceiptSink()
    thread = threading.Thread(target=server.serve_forever, name="receipt-sink")
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_the_fake_posts_one_receipt_per_message_taken_to_the_callback(
        sink: _ReceiptSink) -> None:
    host, port = sink.server_address[:2]
    callback = ReceiptCallback(url=f"http://{host!s}:{port}/v1/provider/receipts",
                               token="callback-token")
    fake = FakeProvider(receipts=callback, faults=Faults(ambiguous_every=2))
    with fake:
        provider = HttpProvider(ProviderEndpoint(url=fake.url, token=TOKEN),
                                clock=RealClock())
        try:
            provider.send("m:1", "555-000-0001", "hi")
            for _ in range(2):  # taken, answered 500; then the retry absorbed
                try:
                    provider.send("m:2", "555-000-0002", "hi")
                except Exception:  # noqa: BLE001 -- the ambiguous 500, expected
                    pass
        finally:
            provider.close()
    # ``stop`` sent what was queued and joined the receipt thread.
    receipts = [r for _, body in sink.posts for r in body["receipts"]]  # type: ignore[index]
    assert sorted(r["key"] for r in receipts) == ["m:1", "m:2"]
    assert {r["status"] for r in receipts} == {"delivered"}
    assert all(isinstance(r["at"], str) and r["at"].endswith("+00:00") for r in receipts)
    assert {auth for auth, _ in sink.posts} == {"Bearer callback-token"}
    assert sum(count for _, count in fake.receipt_posts) == 2
    assert {status for status, _ in fake.receipt_posts} == {202}
