"""A real provider: each send is one HTTPS POST of JSON, classified by the answer's status.

Wire format (what a provider, or an adapter in front of one, must accept)::

    POST <url>                                  the configured URL, path and query as given
    Content-Type: application/json
    Authorization: Bearer <token>               read once from --provider-token-file
    Idempotency-Key: <key>                      "<message uid>:<recipient>", every attempt
    {"to": "<recipient>", "body": "<content>", "key": "<key>"}     (UTF-8 JSON)

and the answer, by status:

=====================================  ==========================================================
2xx                                    accepted; a JSON object's ``"id"`` (or ``"message_id"``)
                                       string is the provider's message id
429, or 503 with Retry-After           THROTTLED: no retry, and no new send on this worker,
                                       before Retry-After (delta seconds or an HTTP date)
401                                    THROTTLED for ``AUTH_PAUSE_S``: the token is refused,
                                       which is about the account, not the message (see below)
408, 409, 5xx, others                  TRANSIENT: retried with the backoff
any other 4xx                          PERMANENT: dead at once, never retried
timeout, refused, reset connection     TRANSIENT
=====================================  ==========================================================

A 4xx other than those is about the message (an invalid number, a body too long): retrying
cannot help and costs money. A 401 is not: made permanent, one expired token would turn the
whole queue dead within seconds, so it pauses the route instead and each delivery it hit
waits too (the error says to check the token). 409 is what providers with idempotency keys
answer while a request with the same key is still in progress: try again later.

A timeout is ambiguous: the provider may have accepted the message and the answer been
lost. That is why the idempotency key goes on every attempt, the same for every attempt of
one (message, recipient): the retry reaches a provider that already has the message, which
answers 2xx without sending it again. The adapter itself retries nothing but one case: a
kept-alive connection found closed by the server when the request went out (an idle
timeout on the provider's side: the request almost surely never arrived, and if it did the
key makes the second one harmless), which it sends once more on a new connection.

One keep-alive connection per sender thread (``threading.local``); ``timeout_s`` bounds
each blocking socket operation (connect, send, each read), not the whole request. The token
is never logged, printed or part of a repr; the URL must not carry credentials.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import math
import re
import threading
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from sms_sim.clock import Clock
from sms_sim.dispatch.transport import TransportError
from sms_sim.errors import ConfigError
from sms_sim.model import ErrorClass

__all__ = [
    "HttpProvider",
    "ProviderEndpoint",
    "AUTH_PAUSE_S",
    "DEFAULT_TIMEOUT_S",
    "answer_error",
    "check_provider_url",
    "parse_retry_after",
    "read_token",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 600.0
AUTH_PAUSE_S = 60.0
MAX_RETRY_AFTER_S = 86_400.0  # a provider asking for more than a day is read as a day
_MAX_DETAIL_CHARS = 160  # of a provider's error text kept in last_error
_MAX_TOKEN_BYTES = 8192
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_DELTA_SECONDS = re.compile(r"\d{1,12}(\.\d{1,9})?")
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: a header value
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def check_provider_url(url: str) -> SplitResult:
    """The parsed URL, or ``ConfigError`` saying what is wrong with it.

    https for any host; plain http only to this machine (127.0.0.1, localhost, ::1), where
    the token and the messages never cross a network: a local relay or a test server.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is no number or out of range
    except ValueError as exc:
        raise ConfigError(f"provider URL {url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"provider URL {url!r} must be http(s)://host[:port]/path")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("provider URL must not carry credentials (they would be printed "
                          "and logged); put the token in --provider-token-file")
    if parts.fragment:
        raise ConfigError(f"provider URL {url!r} must not have a #fragment")
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
        raise ConfigError(f"provider URL {url!r}: plain http only to 127.0.0.1 or localhost "
                          "(the token and the messages would cross the network in clear); "
                          "use https")
    return parts


def read_token(path: str | Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace dropped), or ``ConfigError``
    naming the file, never its content: unreadable, empty, or not one header-safe word."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read provider token file {where!r}: "
                          f"{exc.strerror or exc}") from None
    if len(raw) > _MAX_TOKEN_BYTES:
        raise ConfigError(f"provider token file {where!r} is longer than "
                          f"{_MAX_TOKEN_BYTES} bytes; it should hold the token only")
    token = raw.decode("ascii", errors="replace").strip()
    if not token:
        raise ConfigError(f"provider token file {where!r} is empty")
    if not _TOKEN_CHARS.fullmatch(token):
        raise ConfigError(f"provider token file {where!r} must hold one token: printable "
                          "ASCII without spaces or line breaks")
    return token


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderEndpoint:
    """Where and how to POST: the URL (checked by ``check_provider_url``), the bearer token
    (left out of the repr), and the timeout of each socket operation in seconds."""

    url: str
    token: str = field(repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        check_provider_url(self.url)
        if not _TOKEN_CHARS.fullmatch(self.token):
            raise ConfigError("provider token must be printable ASCII without spaces")
        timeout_s = self.timeout_s
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) \
                or not math.isfinite(timeout_s) or not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise ConfigError(f"provider timeout must be > 0 and at most {MAX_TIMEOUT_S:g} "
                              f"seconds (got {timeout_s!r})")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``now`` (epoch seconds) by a Retry-After header: delta seconds
    (decimals accepted), or an HTTP date (a past one is 0); None when absent or unreadable.
    Never more than ``MAX_RETRY_AFTER_S``."""
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; an obsolete form may lack the zone
        when = when.replace(tzinfo=timezone.utc)
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER_S)


def answer_error(status: int, retry_after: str | None, detail: str,
                 now: float) -> TransportError | None:
    """The provider's answer as the engine sees it: None for 2xx (accepted), else the
    ``TransportError`` to raise, its class by the table in this module's docstring and its
    message starting with the class. ``detail`` is the provider's own words (may be "")."""
    if 200 <= status < 300:
        return None
    said = f": {detail}" if detail else ""
    wait_s = parse_retry_after(retry_after, now)
    if status == 429 or (status == 503 and wait_s is not None):
        after = "no Retry-After" if wait_s is None else f"retry after {wait_s:g}s"
        return TransportError(f"throttled: HTTP {status} ({after}){said}", ErrorClass.THROTTLED,
                              wait_s)
    if status == 401:
        return TransportError(f"throttled: HTTP 401, the provider refused the token (check "
                              f"--provider-token-file); sends paused {AUTH_PAUSE_S:g}s{said}",
                              ErrorClass.THROTTLED, AUTH_PAUSE_S)
    if 400 <= status < 500 and status not in (408, 409):
        return TransportError(f"permanent: HTTP {status}{said}", ErrorClass.PERMANENT)
    if 300 <= status < 400:
        said = f" (redirects are not followed; check the provider URL){said}"
    return TransportError(f"transient: HTTP {status}{said}", ErrorClass.TRANSIENT)


class HttpProvider:
    """``Transport`` over HTTP(S) to one provider URL; safe to call from several threads
    (each has its own connection). ``close`` closes every connection made; a send after
    it opens a new one. Raises ``TransportError`` only from ``send``."""

    def __init__(self, endpoint: ProviderEndpoint, *, clock: Clock) -> None:
        self._endpoint = endpoint
        self._clock = clock
        parts = check_provider_url(endpoint.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._where = f"{parts.scheme}://{parts.netloc}"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []  # every one made, to close
        self._authorization = f"Bearer {endpoint.token}"

    def __repr__(self) -> str:
        return f"HttpProvider({self._endpoint.url!r})"

    def send(self, key: str, recipient: str, content: str) -> str | None:
        body = json.dumps({"to": recipient, "body": content, "key": key},
                          ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Authorization": self._authorization, "Idempotency-Key": key}
        timeout_s = self._endpoint.timeout_s
        try:
            status, retry_after, payload = self._post(body, headers)
        except TimeoutError as exc:
            raise TransportError(
                f"transient: no answer from {self._where} within {timeout_s:g}s (it may have "
                "the message; the retry carries the same Idempotency-Key)") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"transient: {self._where} unreachable: "
                                 f"{_one_line(str(exc)) or type(exc).__name__}") from exc
        except ValueError as exc:  # a key or recipient no header can carry
            raise TransportError(f"permanent: not sendable over HTTP: {exc}",
                                 ErrorClass.PERMANENT) from exc
        detail, message_id = _read_answer(payload)
        error = answer_error(status, retry_after, detail, self._clock.now())
        if error is not None:
            raise error
        return message_id

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str | None, bytes]:
        """One POST on this thread's connection: (status, Retry-After, body). A kept-alive
        connection the server closed meanwhile fails before the request is read; that one
        case is sent again once, on a new connection. Any error closes the connection."""
        conn, reused = self._connection()
        try:
            try:
                conn.request("POST", self._target, body=body, headers=headers)
                response = conn.getresponse()
            except _STALE_CONNECTION as exc:
                if not reused:
                    raise
                log.debug("kept-alive connection to %s was closed (%s); sending on a new one",
                          self._where, type(exc).__name__)
                conn.close()
                conn.request("POST", self._target, body=body, headers=headers)
                response = conn.getresponse()
            payload = response.read()
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        return response.status, response.getheader("Retry-After"), payload

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it is open already (kept alive)."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            timeout_s = self._endpoint.timeout_s
            if self._https:
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout_s)
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn, conn.sock is not None

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()


def _read_answer(payload: bytes) -> tuple[str, str | None]:
    """(the provider's words, its message id) from an answer's body: a JSON object's
    ``error``/``message``/``detail`` and ``id``/``message_id`` strings, else the first line
    of the text; both cut to one short line (they end up in last_error)."""
    text = payload[:4096].decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return _one_line(text), None
    if not isinstance(data, dict):
        return _one_line(text), None
    detail = next((v for k in ("error", "message", "detail")
                   if isinstance(v := data.get(k), str)), "")
    message_id = next((v for k in ("id", "message_id") if isinstance(v := data.get(k), str)),
                      None)
    return _one_line(detail), message_id


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_DETAIL_CHARS else line[:_MAX_DETAIL_CHARS - 3] + "..."
