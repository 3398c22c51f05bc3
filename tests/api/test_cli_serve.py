"""``serve``'s refusals: every bad argument is one line and an exit code, never a traceback,
and nothing is started or created before the arguments are known to be good. What only a
running server shows (a worker that fails, a port in use) runs real processes."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sms_sim.cli import main
from sms_sim.cli.common import ExitCode
from sms_sim.cli.serve import _exit_code, _listen, _resolve, _split
from tests.api.live_server import free_port, live_server
from tests.conftest import ROOT, START

TIMEOUT_S = 60


def refusal(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run ``serve ARGS`` in process; its exit code and its stderr, which must be one line."""
    with pytest.raises(SystemExit) as ended:
        main(["serve", *args], prog="sms-sim")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert isinstance(ended.value.code, int)
    return ended.value.code, err


@pytest.mark.parametrize("port, reason", [
    ("0", "must be >= 1 (got '0')"), ("65536", "must be <= 65535 (got '65536')"),
    ("http", "not an integer: 'http'"),
])
def test_a_bad_port_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           port: str, reason: str) -> None:
    code, err = refusal(capsys, "--db", str(tmp_path / "d.db"), "--port", port)
    assert code == ExitCode.USAGE
    assert err == f"sms-sim serve: error: argument --port: {reason}\n"
    assert not (tmp_path / "d.db").exists()


@pytest.mark.parametrize("host, reason", [
    ("", "give an address"), (" ", "give an address"),
    ("nosuch.invalid", "cannot resolve 'nosuch.invalid'"),
])
def test_a_host_that_names_no_address_is_one_line_and_exit_2(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, host: str, reason: str) -> None:
    code, err = refusal(capsys, "--db", str(tmp_path / "d.db"), "--host", host)
    assert code == ExitCode.USAGE
    assert err.startswith(f"sms-sim serve: error: argument --host: {reason}"), err


@pytest.mark.parametrize("workers", ["0", "65", "many"])
def test_a_bad_process_count_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                                    workers: str) -> None:
    code, err = refusal(capsys, "--workers", workers)
    assert code == ExitCode.USAGE and "argument --workers" in err


@pytest.mark.parametrize("option, reason", [
    ("--db", "--db is serve's own option"), ("--db=other.db", "--db is serve's own option"),
    ("--exit-when-idle", "--exit-when-idle does not go with serve"),
])
def test_worker_options_that_serve_decides_are_refused(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, option: str, reason: str) -> None:
    code, err = refusal(capsys, "--db", str(tmp_path / "d.db"), "--with-worker", "--quiet",
                        option, *(["x.db"] if option == "--db" else []))
    assert code == ExitCode.USAGE
    assert err.startswith(f"sms-sim serve: error: {reason}"), err
    assert not (tmp_path / "d.db").exists()


def test_help_after_with_worker_is_the_workers_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["serve", "--with-worker", "--help"], prog="sms-sim")
    assert ended.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sms-sim serve --with-worker") and "--senders" in out


def test_serves_help_says_how_worker_options_are_given(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"], prog="sms-sim")
    out = " ".join(capsys.readouterr().out.split())
    assert "Every option after --with-worker is the worker's" in out
    assert "(default 127.0.0.1: this machine only)" in out


def test_everything_after_with_worker_is_the_workers() -> None:
    assert _split(["--port", "1", "--with-worker", "--senders", "8", "--port", "2"]) == (
        ["--port", "1"], ["--senders", "8", "--port", "2"])
    assert _split(["--port", "1"]) == (["--port", "1"], None)
    assert _split(["--with-worker"]) == ([], [])


@pytest.mark.parametrize("server_ok, worker_code, asked, expected", [
    (True, 0, True, 0), (True, 143, True, 0), (True, 130, True, 0),  # stopped as asked
    (False, 143, True, 1),  # the server failed to start
    (True, 3, True, 3),  # worker threads outlived their budget
    (True, 1, False, 1), (True, 2, False, 2),  # the worker failed on its own
    (True, 0, False, 1),  # ... or left without being asked: still a failure of serve
    (True, -9, True, 137),  # killed outright
])
def test_the_exit_code_says_which_part_failed(server_ok: bool, worker_code: int, asked: bool,
                                              expected: int) -> None:
    assert _exit_code(server_ok, worker_code, asked=asked) == expected


# --- real processes ---------------------------------------------------------------------


BLOCK_API = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'fastapi', 'uvicorn', 'starlette'}:
            raise ModuleNotFoundError('blocked: ' + name, name=name)
        return None
sys.meta_path.insert(0, Block())
from sms_sim.cli import main
sys.exit(main(sys.argv[1:], prog='sms-sim'))
"""


@pytest.mark.slow
def test_without_the_api_extra_serve_says_what_to_install(tmp_path: Path) -> None:
    ran = subprocess.run([sys.executable, "-c", BLOCK_API, "serve", "--db",
                          str(tmp_path / "d.db"), "--port", str(free_port())],
                         capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S)
    assert ran.returncode == ExitCode.USAGE
    assert len(ran.stderr.splitlines()) == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert ran.stderr.startswith("sms-sim serve: error: the HTTP API needs the api extra (")
    assert "install sms_sim[api]" in ran.stderr
    assert not (tmp_path / "d.db").exists()


@pytest.mark.slow
def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = subprocess.run([*START, "serve", "--db", str(tmp_path / "d.db"), "--port",
                              str(port)], capture_output=True, text=True, cwd=tmp_path,
                             timeout=TIMEOUT_S)
    assert ran.returncode == ExitCode.ERROR
    assert ran.stderr == (f"start.py serve: error: port {port} on 127.0.0.1 is already in use "
                          "(another server? choose another --port)\n")
    assert not (tmp_path / "d.db").exists()


@pytest.mark.slow
def test_an_address_not_of_this_machine_is_one_line_and_exit_2(tmp_path: Path) -> None:
    ran = subprocess.run([*START, "serve", "--db", str(tmp_path / "d.db"), "--host",
                          "192.0.2.1", "--port", str(free_port())],  # TEST-NET-1: never ours
                         capture_output=True, text=True, cwd=tmp_path, timeout=TIMEOUT_S)
    assert ran.returncode == ExitCode.USAGE
    assert ran.stderr == ("start.py serve: error: argument --host: '192.0.2.1' is not an "
                          "address of this machine\n")


@pytest.mark.slow
def test_a_worker_that_fails_stops_the_server_with_its_exit_code(tmp_path: Path) -> None:
    """The worker refuses its ledger (the store's own file): serve must not go on serving
    messages that nothing will send. The store was created before the worker started."""
    ran = subprocess.run([*START, "serve", "--db", "d.db", "--port", str(free_port()),
                          "--with-worker", "--ledger", "d.db"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=TIMEOUT_S)
    assert ran.returncode == ExitCode.ERROR, ran.stderr
    assert "Traceback" not in ran.stderr
    assert "python3 -m sms_sim worker: error: 'd.db' is an sms_sim store" in ran.stderr
    assert "start.py serve: error: the worker exited (code 1) while the server ran; server " \
           "stopped" in ran.stderr
    listed = subprocess.run([*START, "list", "--db", "d.db"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=TIMEOUT_S)
    assert listed.returncode == 0 and listed.stdout == "no messages\n"


@pytest.mark.slow
def test_sigint_stops_server_and_worker_and_exits_0(tmp_path: Path) -> None:
    with live_server(tmp_path, "--workers", "2", "--with-worker", "--quiet") as server:
        worker = server.worker_pid
        assert worker is not None
        assert server.stop(signal.SIGINT) == 0, server.output
    with pytest.raises(ProcessLookupError):  # reaped by serve before it exited
        os.kill(worker, 0)


def test_connections_to_the_bound_socket_send_without_nagle_delay() -> None:
    """uvicorn serves on the socket ``serve`` binds; asyncio turns TCP_NODELAY on for the
    connections it accepts only if that socket says it is TCP. With it off, each answer on
    a kept-alive connection waited about 44 ms for the client's delayed ACK."""
    family, address = _resolve(argparse.ArgumentParser(), "127.0.0.1", 0)
    listener = _listen(family, address, "127.0.0.1", 0)
    nodelay: list[int] = []

    async def check() -> None:
        loop = asyncio.get_running_loop()
        accepted = asyncio.Event()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                accepted.set()

        server = await loop.create_server(Probe, sock=listener.sock)
        port = listener.sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(accepted.wait(), timeout=10)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(check())
    assert nodelay and nodelay[0] != 0
