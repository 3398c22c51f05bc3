"""How ``serve`` stops: SIGTERM lets a request in flight finish; a second Ctrl-C stops it at
once and quietly, one line saying requests in flight were cut off, never the traceback of
the app's cancelled lifespan that uvicorn logs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.api.live_server import STOP_TIMEOUT_S, eventually, live_server
from tests.api.test_live_server import create_key
from tests.conftest import START, phones

pytestmark = pytest.mark.slow


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


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_request_in_flight_at_sigterm_finishes_and_its_message_is_kept(
        tmp_path: Path, workers: str) -> None:
    """SIGTERM while a submit's body is still arriving: the submit is answered 201, the
    message is in the database, and serve exits 0."""
    answer, code, output = _submit_across_sigterm(tmp_path, "--workers", workers)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201"), answer
    assert json.loads(payload)["recipient_count"] == 3
    assert code == 0, output
    assert "Traceback" not in output, output
    assert _contents(tmp_path) == ["Stay indoors"]


def test_a_request_still_in_flight_after_the_shutdown_grace_is_cut_off(
        tmp_path: Path) -> None:
    """The other side of the grace: a body that has not arrived when ``--shutdown-grace``
    runs out is not waited for, and nothing of it is stored (so the test above shows
    the wait, not a server that would have answered anyway)."""
    answer, code, output = _submit_across_sigterm(tmp_path, "--shutdown-grace", "1",
                                                  body_after_exit=True)
    assert not answer.startswith(b"HTTP/1.1 201"), answer
    assert code == 0, output
    assert _contents(tmp_path) == []


def test_a_shutdown_grace_of_zero_is_refused() -> None:
    """uvicorn reads 0 as "wait for ever", the opposite of what it says."""
    done = subprocess.run([*START, "serve", "--shutdown-grace", "0"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "--shutdown-grace" in done.stderr, done.stderr


def _submit_across_sigterm(tmp_path: Path, *arguments: str,
                           body_after_exit: bool = False) -> tuple[bytes, int, str]:
    """Start a submit, SIGTERM serve while its body is still to come, then send the body
    (once serve has exited, with ``body_after_exit``); the answer read back, serve's exit
    code and its output. The request is known to be in the app, not just in the kernel's
    queue, because the server has answered its ``Expect: 100-continue``, which uvicorn
    sends only once the app reads the body."""
    with live_server(tmp_path, *arguments) as server:
        token = create_key(tmp_path, "acme")
        body = json.dumps({"content": "Stay indoors", "recipients": phones(3)}).encode()
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=STOP_TIMEOUT_S) as client:
            client.sendall(
                b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: Bearer " + token.encode() + b"\r\n"
                b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            interim = client.recv(1024)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            server.process.send_signal(signal.SIGTERM)
            eventually(lambda: "Shutting down" in server.output, timeout_s=STOP_TIMEOUT_S,
                       what="serve shutting down", detail=lambda: server.output)
            if body_after_exit:
                server.process.wait(timeout=STOP_TIMEOUT_S)
            try:
                client.sendall(body)
                answer = _read_response(client)
            except OSError:  # the server closed the connection: no answer
                answer = b""
        code = server.process.wait(timeout=STOP_TIMEOUT_S)
        return answer, code, server.output


def _contents(tmp_path: Path) -> list[str]:
    """The content of every message in the database serve used."""
    listed = subprocess.run([*START, "list", "--db", "d.db", "--json"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    assert listed.returncode == 0, listed.stderr
    return [m["content"] for m in json.loads(listed.stdout)["messages"]]


def _read_response(client: socket.socket) -> bytes:
    """One whole HTTP response from ``client`` (read until the server closes it)."""
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
