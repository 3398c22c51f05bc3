"""A PostgreSQL URL's password never reaches output: not in ``serve``'s banner (it printed
the whole URL), and not when a password with characters that need percent-encoding makes
the URL unparseable (``tests/unit/test_open_store.py``)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from tests.api.live_server import live_server

# Real processes and a server (STYLE.md section 10).
pytestmark = pytest.mark.slow


def test_serve_names_its_database_without_the_password(tmp_path: Path, url: str) -> None:
    password = urllib.parse.urlsplit(url).password
    assert password
    with live_server(tmp_path, "--db", url) as server:
        banner = server.output
    assert "serving http://127.0.0.1:" in banner and password not in banner, banner
