"""The HTTP API: ``create_app(store_url)``, a FastAPI app over ``dispatch.service``.

FastAPI is the optional extra ``sms_sim[api]``. Importing this package needs nothing
beyond the standard library; the two factories import the app when called, and without
the extra they raise ``ExtrasMissingError``, one line that says what to install (an edge
such as ``sms_sim serve`` prints it as is). ``app_from_environment`` is the factory for
``uvicorn --factory sms_sim.api:app_from_environment`` (one app per worker process): the
store comes from ``SMS_SIM_STORE_URL``, read when it is called, never at import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sms_sim.errors import ConfigError, SmsSimError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sms_sim.clock import Clock
    from sms_sim.dispatch.service import DispatchService

__all__ = ["create_app", "app_from_environment", "ExtrasMissingError", "STORE_URL_VARIABLE"]

STORE_URL_VARIABLE = "SMS_SIM_STORE_URL"
_EXTRA_MODULES = ("fastapi", "starlette", "pydantic", "prometheus_client", "fastapi_offline",
                  "multipart")


class ExtrasMissingError(SmsSimError, ImportError):
    """An optional extra this feature needs is not installed; the message says which."""


def create_app(store_url: str, *, clock: Clock | None = None,
               service: DispatchService | None = None) -> FastAPI:
    """The HTTP API over the store at ``store_url``: see ``sms_sim.api.app.create_app``.
    Raises ``ExtrasMissingError`` without the ``api`` extra."""
    try:
        from sms_sim.api.app import create_app as factory
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in _EXTRA_MODULES:
            raise
        raise ExtrasMissingError(
            f"the HTTP API needs the api extra ({exc.name} is missing): "
            "pip install 'sms_sim[api]'") from exc
    return factory(store_url, clock=clock, service=service)


def app_from_environment() -> FastAPI:
    """``create_app`` over the store ``SMS_SIM_STORE_URL`` names; ``ConfigError`` if unset."""
    url = os.environ.get(STORE_URL_VARIABLE, "").strip()
    if not url:
        raise ConfigError(f"{STORE_URL_VARIABLE} is not set: it names the store the API serves "
                          "(a SQLite path, sqlite:///path or memory:)")
    return create_app(url)
