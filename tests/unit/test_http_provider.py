"""The HTTP provider adapter: every answer mapped to its class, Retry-After in both forms,
the URL and token checks, and the socket-level failures (timeout, refused, a kept-alive
connection the server dropped) against servers on 127.0.0.1.

The mapping is a pure function of (status, Retry-After, now) and is tested as one; the rest
talks to ``tests.fake_provider`` or to a raw socket, with timeouts of a fraction of a second
(real sockets, so nothing here is faked, and nothing asserts on elapsed time).
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Iterator
from email.utils import format_datetime
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sms_sim.clock import RealClock, VirtualClock
from sms_sim.dispatch.http_provider import (
    AUTH_PAUSE_S,
    MAX_RETRY_AFTER_S,
    HttpProvider,
    ProviderEndpoint,
    answer_error,
    check_provider_url,
    parse_retry_after,
    read_token,
)
from sms_sim.dispatch.transport import TransportError
from sms_sim.errors import ConfigError
from sms_sim.model import ErrorClass
from tests.conftest import T0
from tests.fake_provider import TOKEN, FakeProvider, Faults

HTTP_DATE_IN_90_S = format_datetime(datetime.fromtimestamp(T0 + 90, timezone.utc), usegmt=True)
HTTP_DATE_PAST = format_datetime(datetime.fromtimestamp(T0 - 90, timezone.utc), usegmt=True)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_accepted(status: int) -> None:
    assert answer_error(status, None, "", T0) is None


@pytest.mark.parametrize("status", [400, 403, 404, 410, 413, 415, 422])
def test_other_4xx_are_permanent(status: int) -> None:
    error = answer_error(status, None, "invalid number", T0)
    assert error is not None and error.error_class is ErrorClass.PERMANENT
    assert str(error) == f"permanent: HTTP {status}: invalid number"


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504, 301, 302, 100])
def test_408_409_5xx_and_the_unexpected_are_transient(status: int) -> None:
    error = answer_error(status, None, "", T0)
    assert error is not None and error.error_class is ErrorClass.TRANSIENT
    assert error.retry_after_s is None
    assert str(error).startswith(f"transient: HTTP {status}")


@pytest.mark.parametrize(("header", "wait_s"), [
    ("2", 2.0), ("0", 0.0), (" 120 ", 120.0), ("1.5", 1.5),
    (HTTP_DATE_IN_90_S, 90.0), (HTTP_DATE_PAST, 0.0),
    ("Thu, 01 Jan 1970 00:00:00", 0.0),  # an obsolete form without a zone: GMT
    ("999999999999", MAX_RETRY_AFTER_S),
    (None, None), ("soon", None), ("-5", None), ("", None), ("1e9", None),
])
def test_429_is_throttled_with_retry_after_in_seconds_or_as_a_date(
        header: str | None, wait_s: float | None) -> None:
    error = answer_error(429, header, "", T0)
    assert error is not None and error.error_class is ErrorClass.THROTTLED
    # HTTP dates have whole seconds; T0 has a fraction.
    assert error.retry_after_s == (None if wait_s is None else pytest.approx(wait_s, abs=1))
    assert parse_retry_after(header, T0) == error.retry_after_s


def test_503_with_retry_after_is_a_throttle_and_401_pauses_the_route() -> None:
    busy = answer_error(503, "30", "", T0)
    assert busy is not None and (busy.error_class, busy.retry_after_s) == (
        ErrorClass.THROTTLED, 30.0)
    refused = answer_error(401, None, "bad token", T0)
    assert refused is not None and refused.error_class is ErrorClass.THROTTLED
    assert refused.retry_after_s == AUTH_PAUSE_S and "--provider-token-file" in str(refused)


@pytest.mark.parametrize("url", ["https://sms.example.com/v1/messages",
                                 "https://sms.example.com:8443/send?account=7",
                                 "http://127.0.0.1:8080/", "http://localhost/x",
                                 "http://[::1]:9000/send"])
def test_good_provider_urls(url: str) -> None:
    check_provider_url(url)


@pytest.mark.parametrize(("url", "fragment"), [
    ("http://sms.example.com/v1", "plain http only to 127.0.0.1 or localhost"),
    ("ftp://127.0.0.1/x", "must be http(s)://host"),
    ("127.0.0.1:8080", "must be http(s)://host"),
    ("https:///path", "must be http(s)://host"),
    ("https://user:secret@sms.example.com/", "must not carry credentials"),
    ("https://sms.example.com:99999/", "is not a URL"),
    ("https://sms.example.com/#top", "must not have a #fragment"),
])
def test_bad_provider_urls_say_what_is_wrong(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)) as caught:
        check_provider_url(url)
    assert "secret" not in str(caught.value)


def test_the_token_file_is_read_stripped_and_never_quoted(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_text("  s3cr3t-token\n")
    assert read_token(good) == "s3cr3t-token"
    for name, text, fragment in (("empty", "\n \n", "is empty"),
                                 ("two", "s3cr3t one\nmore", "must hold one token")):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError, match=fragment) as caught:
            read_token(path)
        assert "s3cr3t" not in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read provider token file .*missing"):
        read_token(tmp_path / "missing")


def test_the_endpoint_hides_its_token_and_checks_its_timeout() -> None:
    endpoint = ProviderEndpoint(url="https://sms.example.com/", token="s3cr3t")
    assert "s3cr3t" not in repr(endpoint)
    assert "s3cr3t" not in repr(HttpProvider(endpoint, clock=RealClock()))
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        ProviderEndpoint(url="https://sms.example.com/", token="t", timeout_s=0)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(faults=Faults(throttle_every=3, retry_after="7", fail_every=5,
                                    bad_numbers=frozenset({"555-000-0666"}))) as server:
        yield server


def _provider(url: str, token: str = TOKEN, timeout_s: float = 5.0) -> HttpProvider:
    return HttpProvider(ProviderEndpoint(url=url, token=token, timeout_s=timeout_s),
                        clock=VirtualClock(T0))


def _error(provider: HttpProvider, key: str, to: str) -> TransportError:
    with pytest.raises(TransportError) as caught:
        provider.send(key, to, "hello")
    return caught.value


def test_against_the_fake_provider_every_answer_gets_its_class(
        fake: FakeProvider, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    provider = _provider(fake.url)  # the fake throttles every 3rd request, fails every 5th
    try:
        first_id = provider.send("m:1", "555-000-0001", "hello")  # 1: accepted
        assert first_id is not None and first_id.startswith("fp-")
        bad = _error(provider, "m:2", "555-000-0666")  # 2: the bad number
        assert (bad.error_class, str(bad)) == (ErrorClass.PERMANENT,
                                               "permanent: HTTP 400: invalid number")
        throttled = _error(provider, "m:3", "555-000-0003")  # 3: throttled
        assert (throttled.error_class, throttled.retry_after_s) == (ErrorClass.THROTTLED, 7.0)
        assert str(throttled) == "throttled: HTTP 429 (retry after 7s): too many requests"
        assert provider.send("m:1", "555-000-0001", "hello") == first_id  # 4: a repeat
        failed = _error(provider, "m:5", "555-000-0005")  # 5: 500
        assert failed.error_class is ErrorClass.TRANSIENT
        assert str(failed) == "transient: HTTP 500: internal error"
    finally:
        provider.close()
    assert [a.status for a in fake.attempts] == [200, 400, 429, 200, 500]
    summary = fake.summary()
    assert (summary.delivered, summary.absorbed, summary.effective_duplicates) == (1, 1, 0)
    assert TOKEN not in caplog.text


def test_a_refused_token_pauses_and_never_appears_in_the_error(fake: FakeProvider) -> None:
    provider = _provider(fake.url, token="wrong-s3cr3t")
    try:
        error = _error(provider, "m:1", "555-000-0001")
    finally:
        provider.close()
    assert error.error_class is ErrorClass.THROTTLED and error.retry_after_s == AUTH_PAUSE_S
    assert "s3cr3t" not in str(error)
    assert fake.summary().attempts == 0


def test_keep_alive_one_connection_per_thread() -> None:
    with FakeProvider() as fake:
        provider = _provider(fake.url)
        try:
            provider.send("m:1", "555-000-0001", "hello")
            provider.send("m:2", "555-000-0002", "hello")
            other = threading.Thread(target=provider.send, args=("m:3", "555-000-0003", "hi"))
            other.start()
            other.join(timeout=10)
            assert not other.is_alive()
            assert len(provider._connections) == 2  # this thread's, reused, and the other's
        finally:
            provider.close()
        assert fake.summary().delivered == 3 and fake.connections == 2


def test_a_timeout_is_transient_and_says_the_key_makes_the_retry_safe() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        port = silent.getsockname()[1]
        provider = _provider(f"http://127.0.0.1:{port}/send", timeout_s=0.2)
        try:
            error = _error(provider, "m:1", "555-000-0001")
        finally:
            provider.close()
    assert error.error_class is ErrorClass.TRANSIENT
    assert "within 0.2s" in str(error) and "same Idempotency-Key" in str(error)


def test_connection_refused_is_transient() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    provider = _provider(f"http://127.0.0.1:{port}/send", timeout_s=1.0)
    try:
        error = _error(provider, "m:1", "555-000-0001")
    finally:
        provider.close()
    assert error.error_class is ErrorClass.TRANSIENT
    assert str(error).startswith(f"transient: http://127.0.0.1:{port} unreachable")


def _answer_once_per_connection(server: socket.socket, connections: int) -> None:
    """Answer one request per connection with a keep-alive 200, then drop the connection
    without saying so: what a provider's idle timeout does to a kept-alive connection."""
    for _ in range(connections):
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"id":"p1"}')


def test_a_kept_alive_connection_dropped_by_the_server_is_sent_again_on_a_new_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        thread = threading.Thread(target=_answer_once_per_connection, args=(server, 2))
        thread.start()
        provider = _provider(f"http://127.0.0.1:{port}/send", timeout_s=5.0)
        try:
            assert provider.send("m:1", "555-000-0001", "hello") == "p1"
            assert provider.send("m:2", "555-000-0002", "hello") == "p1"
        finally:
            provider.close()
            thread.join(timeout=10)
    assert not thread.is_alive()
