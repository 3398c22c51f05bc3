"""Exception hierarchy: every error the library raises on purpose is an ``SmsSimError``.

Callers that only care about "bad value" can catch ``ValueError``: the validation errors
inherit from it too. The CLI turns any ``SmsSimError`` into one line on stderr.
"""

from __future__ import annotations

__all__ = [
    "SmsSimError",
    "ConfigError",
    "InvalidMessageError",
]


class SmsSimError(Exception):
    """Base class for errors raised deliberately by sms_sim."""


class ConfigError(SmsSimError, ValueError):
    """A configuration value is out of range; the message names the field and the value."""


class InvalidMessageError(SmsSimError, ValueError):
    """A message field is malformed; the message names the field and the value."""
