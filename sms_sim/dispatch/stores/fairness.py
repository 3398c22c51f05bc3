"""How a claim splits its limit over the due messages: the one definition every store meets.

Why a closed form rather than rounds of quotas: PostgreSQL computes the split in the same
statement that reads the due messages (``postgres.claim._SPLIT_SQL``), with window
functions, so the rule has to be arithmetic a statement can state, and the memory and
SQLite stores must lease exactly the same rows (the state-machine test compares them
claim by claim). ``tests/properties/test_fair_split.py`` checks the statement against
this code on random inputs.

The rule, for due messages given in claim order (never served first, then least recently
served) with each one's class (``effective_priority``) and ready count:

1. Tenants, ordered never served first (by their first due message), then least
   recently served, share the limit by **water filling**: each gets
   ``min(demand, level)`` for the highest whole level the limit covers, and what is left
   (fewer units than tenants still wanting) goes one each to the earliest of those still
   wanting. A lone tenant (a lone broadcast) gets the whole limit; no tenant gets more
   than one above another while that other still has work.
2. Within a tenant, classes are served strictly, highest first: a class gets its share
   only once every higher class has all it can take.
3. Within a class, messages share the class's part by water filling again, in claim
   order.

The serve order this claim leaves (``served_seq``, which orders the next claim) is the
grant order returned: tenants that got none of the left-over units first, then those that
did; within a tenant by class, then messages without a left-over unit before those with
one. So the units left over go round: the next claim gives them to those that went
without.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

__all__ = ["DueMessage", "fair_split", "water_fill"]


class DueMessage(NamedTuple):
    """One due message as a claim sees it, in claim order."""

    tenant: str
    rank: int  # its class: ``effective_priority``
    message_id: int
    ready: int  # deliveries it could lease now (counting up to the limit is enough)


def water_fill(demands: Sequence[int], budget: int) -> list[tuple[int, bool]]:
    """Max-min fair whole shares of ``budget`` for ``demands`` given in order: each share
    and whether it holds one of the units left over above the common level (those go one
    each to the earliest demands above the level)."""
    if sum(demands) <= budget:
        return [(demand, False) for demand in demands]
    level = _level(demands, budget)
    shares = [min(demand, level) for demand in demands]
    left = budget - sum(shares)
    result: list[tuple[int, bool]] = []
    for share, demand in zip(shares, demands, strict=True):
        extra = left > 0 and demand > level
        left -= extra
        result.append((share + extra, extra))
    return result


def _level(demands: Sequence[int], budget: int) -> int:
    """The highest whole level ``L`` with ``sum(min(d, L)) <= budget`` (the demands add up
    to more than ``budget``): below the ``k`` smallest demands, the rest share what those
    leave evenly."""
    below = 0
    count = len(demands)
    for k, demand in enumerate(sorted(demands)):
        if below + (count - k) * demand > budget:
            return (budget - below) // (count - k)
        below += demand
    raise AssertionError("the demands fit the budget")  # pragma: no cover


def fair_split(due: Sequence[DueMessage], limit: int,
               tenant_served: Mapping[str, int]) -> list[tuple[int, int]]:
    """The grants ``(message_id, count)`` of one claim of ``limit`` over ``due`` (in claim
    order), in the serve order they leave; ``tenant_served`` holds each tenant's last serve
    (a sequence number; absent: never served)."""
    by_tenant: dict[str, list[DueMessage]] = {}
    for message in due:
        by_tenant.setdefault(message.tenant, []).append(message)
    never = -1  # sequence numbers start at 1
    tenants = [t for _, t in sorted(enumerate(by_tenant), key=lambda item: (
        tenant_served.get(item[1], never), item[0]))]
    demand = {m.message_id: min(m.ready, limit) for m in due}
    tenant_shares = water_fill([sum(demand[m.message_id] for m in by_tenant[t])
                                for t in tenants], limit)
    grants: list[tuple[tuple[int, ...], int, int]] = []
    for tenant_pos, (tenant, (share, tenant_extra)) in enumerate(
            zip(tenants, tenant_shares, strict=True)):
        classes: dict[int, list[DueMessage]] = {}
        for message in by_tenant[tenant]:
            classes.setdefault(message.rank, []).append(message)
        left = share
        for rank in sorted(classes, reverse=True):
            members = classes[rank]
            wanted = [demand[m.message_id] for m in members]
            budget = min(left, sum(wanted))
            left -= budget
            for pos, (message, (count, extra)) in enumerate(
                    zip(members, water_fill(wanted, budget), strict=True)):
                if count:
                    order = (tenant_extra, tenant_pos, -rank, extra, pos)
                    grants.append((order, message.message_id, count))
    grants.sort()
    return [(message_id, count) for _, message_id, count in grants]
