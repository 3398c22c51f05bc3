#!/usr/bin/env python3
"""A throwaway PostgreSQL server for the tests and for trying the PostgreSQL store by hand.

    python scripts/pg_server.py start      # prints SMS_SIM_PG_DSN=... and SMS_SIM_PG_DIR=...
    python scripts/pg_server.py env DIR    # the same lines again for a running server
    python scripts/pg_server.py stop DIR   # stops it and removes DIR
    python scripts/pg_server.py restart DIR  # pg_ctl restart -m immediate: a crash and recovery
    python scripts/pg_server.py down DIR   # stops it at once (-m immediate), keeping DIR
    python scripts/pg_server.py up DIR     # starts it again, on the same port

The server runs Debian's postgresql-15 binaries (``apt-get install postgresql-15`` first
when they are missing and we are root), as the ``postgres`` user because ``initdb``
refuses root, from a fresh temporary directory owned by that user: data, log and unix
socket all inside it. It listens on 127.0.0.1 only, on a free port, with a random
password for TCP connections (so the store's "never echo a password" path is exercised);
fsync stays on, so a crash test against it means what it says. ``restart``, ``down`` and
``up`` are for the fault tests: an immediate stop is a crash (no checkpoint, sessions cut
off), and the next start runs crash recovery.

Python rather than shell because the pytest session fixture (tests/pg_fixture.py) runs it
the same way a person does, and picking a free port, retrying on a lost race for it and
cleaning up after a failed start read better here. Never imported by sms_sim.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)
PG_PACKAGE = "postgresql-15"
SERVICE_USER = "postgres"
START_TRIES = 5
START_TIMEOUT_S = 60


def _bin_dir() -> Path:
    for folder in PG_BIN_DIRS:
        if Path(folder, "initdb").is_file():
            return Path(folder)
    if os.geteuid() != 0:
        raise SystemExit(f"pg_server: {PG_PACKAGE} is not installed (run as root to have it "
                         f"installed, or: apt-get install {PG_PACKAGE})")
    print(f"pg_server: installing {PG_PACKAGE} with apt-get", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", PG_PACKAGE],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return _bin_dir()


def _as_service_user(command: list[str]) -> list[str]:
    """Run as ``postgres`` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SERVICE_USER, "--", *command]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _dsn(password: str, port: int) -> str:
    return f"postgresql://{SERVICE_USER}:{password}@127.0.0.1:{port}/postgres"


def start() -> tuple[str, Path]:
    """Start a server; returns its DSN and its directory (give that to ``stop``)."""
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="sms_sim_pg_"))
    try:
        os.chmod(root, 0o700)
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVICE_USER)
            os.chown(root, user.pw_uid, user.pw_gid)
        password = secrets.token_hex(12)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        subprocess.run(_as_service_user([
            str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", SERVICE_USER,
            "--pwfile", str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
            check=True, capture_output=True, text=True)
        pwfile.unlink()
        for _ in range(START_TRIES):
            port = _free_port()
            started = _pg_ctl(root, "start", port=port)
            if started.returncode == 0:
                (root / "port").write_text(f"{port}\n")
                (root / "password").write_text(f"{password}\n")
                return _dsn(password, port), root
        log = (root / "log").read_text(errors="replace")[-2000:] if (root / "log").exists() else ""
        raise RuntimeError(f"pg_server: the server did not start ({started.stderr.strip()}; "
                           f"log: {log})")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _pg_ctl(root: Path, action: str, *, port: int | None = None,
            mode: str = "fast") -> subprocess.CompletedProcess[str]:
    """``pg_ctl`` on the server in ``root``, as the service user, waiting for it to finish.
    ``start`` and ``restart`` need the ``port`` (the server's options go with them)."""
    command = [str(_bin_dir() / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"),
               "-w", "-t", str(START_TIMEOUT_S)]
    if port is not None:
        command += ["-o", f"-c listen_addresses=127.0.0.1 -c port={port} "
                          f"-c unix_socket_directories={root} -c max_connections=200"]
    if action != "start":
        command += ["-m", mode]
    return subprocess.run(_as_service_user([*command, action]), capture_output=True, text=True)


def _checked(root: Path, action: str, *, with_port: bool = False, mode: str = "fast") -> None:
    if not (root / "data").is_dir():
        raise SystemExit(f"pg_server: {root} holds no server started by this script")
    port = int((root / "port").read_text()) if with_port else None
    done = _pg_ctl(root, action, port=port, mode=mode)
    if done.returncode != 0:
        raise SystemExit(f"pg_server: pg_ctl {action} failed: {done.stderr.strip()}")


def restart(root: Path) -> None:
    """Crash the server (``-m immediate``: no shutdown checkpoint, every session cut) and
    start it again on its port; returns once it accepts connections (recovery done)."""
    _checked(root, "restart", with_port=True, mode="immediate")


def down(root: Path) -> None:
    """Stop the server at once (``-m immediate``), keeping its directory for ``up``."""
    _checked(root, "stop", mode="immediate")


def up(root: Path) -> None:
    """Start a server stopped by ``down`` again, on the same port; returns once it is
    ready."""
    _checked(root, "start", with_port=True)


def env(root: Path) -> str:
    port = int((root / "port").read_text())
    password = (root / "password").read_text().strip()
    return _dsn(password, port)


def stop(root: Path) -> None:
    """Stop the server in ``root`` (fast shutdown) and remove the directory."""
    if not (root / "data").is_dir():
        raise SystemExit(f"pg_server: {root} holds no server started by this script")
    _pg_ctl(root, "stop")
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"] and len(argv) == 1:
        dsn, root = start()
        print(f"SMS_SIM_PG_DSN={dsn}")
        print(f"SMS_SIM_PG_DIR={root}")
        return 0
    verbs = {"stop": stop, "restart": restart, "down": down, "up": up}
    if len(argv) == 2 and argv[0] == "env":
        root = Path(argv[1])
        print(f"SMS_SIM_PG_DSN={env(root)}")
        print(f"SMS_SIM_PG_DIR={root}")
        return 0
    if len(argv) == 2 and argv[0] in verbs:
        verbs[argv[0]](Path(argv[1]))
        return 0
    print("usage: pg_server.py start | env DIR | stop DIR | restart DIR | down DIR | up DIR",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
