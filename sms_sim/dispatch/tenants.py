"""Who a message belongs to: tenants, the unit of isolation and of fairness.

Every message belongs to one tenant (an employer, a portal customer). A tenant sees only
its own messages, its idempotency keys are its own, and the claim shares capacity across
tenants before it shares it across one tenant's messages, so one employer's broadcast
cannot slow another's. The command line works as the operator: it submits into
``DEFAULT_TENANT`` and sees every tenant. API keys (``keys``) name the tenant a request
acts for.
"""

from __future__ import annotations

import re

from sms_sim.dispatch.validation import InvalidRequestError

__all__ = ["DEFAULT_TENANT", "TENANT_MAX_CHARS", "validate_tenant"]

DEFAULT_TENANT = "default"
TENANT_MAX_CHARS = 63
# Lower-case letters, digits and "-", "_", ".", starting with a letter or digit: safe in a
# URL, a log line, a metric label and a file name, and one spelling per tenant.
_TENANT_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")


def validate_tenant(name: object) -> str:
    """A tenant's name as stored: 1-63 characters of a-z, 0-9, ".", "_" and "-", starting
    with a letter or digit. Names are not folded: "Acme" is refused, not turned into
    "acme", so no two spellings ever name one tenant's data."""
    if not isinstance(name, str) or not 1 <= len(name) <= TENANT_MAX_CHARS \
            or _TENANT_RE.fullmatch(name) is None:
        raise InvalidRequestError(
            f"tenant must be 1-{TENANT_MAX_CHARS} characters of a-z, 0-9, '.', '_' or '-', "
            f"starting with a letter or digit (got {name!r})")
    return name
