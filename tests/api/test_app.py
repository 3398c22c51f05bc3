"""The factory: the store opened at startup (a SQLite database created then, as ``init``
does) and closed at shutdown; ``app_from_environment`` for uvicorn's ``--factory``; and
without the api extra, one line saying what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sms_sim.api import STORE_URL_VARIABLE, app_from_environment, create_app
from sms_sim.dispatch.errors import StoreError
from sms_sim.errors import ConfigError
from tests.conftest import ROOT


def test_the_database_is_created_at_startup_and_closed_at_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "api.db"
    app = create_app(str(path))
    assert not path.exists()  # building the app opens nothing
    with TestClient(app) as client:
        assert path.exists()
        assert client.get("/readyz").status_code == 200
        service = app.state.service
    assert app.state.service is None
    with pytest.raises(StoreError):
        service.api_keys()
    with TestClient(create_app(f"sqlite:///{path}")) as again:  # an existing one is kept
        assert again.get("/readyz").json()["status"] == "ready"


def test_app_from_environment_reads_the_url_when_called(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_URL_VARIABLE, raising=False)
    with pytest.raises(ConfigError, match=STORE_URL_VARIABLE):
        app_from_environment()
    monkeypatch.setenv(STORE_URL_VARIABLE, str(tmp_path / "env.db"))
    with TestClient(app_from_environment()) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
    assert (tmp_path / "env.db").exists()


PROBE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'fastapi', 'starlette', 'pydantic', 'prometheus_client'}:
            raise ModuleNotFoundError('blocked: ' + name, name=name)
        return None
sys.meta_path.insert(0, Block())
import sms_sim, sms_sim.api
from sms_sim.errors import SmsSimError
try:
    sms_sim.api.create_app('memory:')
except SmsSimError as exc:
    print(type(exc).__name__, exc)
"""


def test_without_the_extra_the_api_says_what_to_install() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ExtrasMissingError the HTTP API needs the api extra")
    assert "pip install 'sms_sim[api]'" in result.stdout
    assert len(result.stdout.strip().splitlines()) == 1
