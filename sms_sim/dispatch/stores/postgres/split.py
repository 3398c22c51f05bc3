"""The fair split of a claim as one statement: ``fairness.fair_split`` in SQL.

Why in the database: the split needs every due message's class and ready count and every
tenant's last serve; read, split and answered in one statement, a claim costs one round
trip for it whatever the number of due messages and tenants, and the rule is stated where
the data is (window functions: a running sum finds each water level, a running count
hands out the units left over). ``tests/properties/test_fair_split.py`` checks this
statement against ``fairness.fair_split`` on random inputs: the memory and SQLite stores
run that one, and every store must lease the same rows.

``split_sql(asked, tenants, keep)`` builds the statement on two sources, so the test can
feed it values instead of tables: ``asked`` (columns ``tenant``, ``rank``, ``pos``: claim
order, ``demand``: ready deliveries up to the limit, and whatever the caller wants back)
and ``tenants`` (``name``, ``served_seq``). Its rows are those of ``asked`` with their
``share``: the granted ones first, in the serve order they leave (``fairness``), then
those of the rest whose column ``keep`` is not NULL (the claim's aging step needs the
messages holding a kept class). So with many small messages due, the client gets about a
claim's worth of rows, not all of them.
"""

from __future__ import annotations

__all__ = ["split_sql"]


def _water_fill(name: str, source: str, group: str) -> str:
    """CTEs ending in ``name`` (columns: ``group``'s, ``pos``, ``share``, ``extra``): each
    row of ``source`` (``group``'s columns, ``pos``, ``demand``, ``budget``: its group's)
    given its max-min fair share of its group's budget (``fairness.water_fill``)."""
    return f"""
{name}_sorted AS (
    SELECT {group}, pos, demand, budget, count(*) OVER g AS n,
        (sum(demand) OVER g)::bigint AS total,
        row_number() OVER s - 1 AS k, (sum(demand) OVER s)::bigint - demand AS below
    FROM {source}
    WINDOW g AS (PARTITION BY {group}),
        s AS (PARTITION BY {group} ORDER BY demand, pos ROWS UNBOUNDED PRECEDING)
), {name}_level AS (
    SELECT DISTINCT ON ({group}) {group}, (budget - below) / (n - k) AS level
    FROM {name}_sorted WHERE total > budget AND below + (n - k) * demand > budget
    ORDER BY {group}, k
), {name}_base AS (
    SELECT s.*, l.level, CASE WHEN l.level IS NULL THEN s.demand
                              ELSE LEAST(s.demand, l.level) END AS base
    FROM {name}_sorted AS s LEFT JOIN {name}_level AS l USING ({group})
), {name} AS (
    SELECT {group}, pos, base + extra::int AS share, extra FROM (
        SELECT {group}, pos, base, COALESCE(demand > level AND
            count(*) FILTER (WHERE demand > level) OVER r <= budget - sum(base) OVER g,
            false) AS extra
        FROM {name}_base
        WINDOW g AS (PARTITION BY {group}),
            r AS (PARTITION BY {group} ORDER BY pos ROWS UNBOUNDED PRECEDING)) AS e
)"""


def split_sql(asked: str, tenants: str, keep: str) -> str:
    """The split statement over the sources described in the module docstring."""
    return f"""
WITH asked AS MATERIALIZED ({asked}),
tenant_in AS (
    SELECT a.tenant, 0 AS whole, a.demand, %(limit)s::bigint AS budget,
        row_number() OVER (ORDER BY COALESCE(t.served_seq, -1), a.first) AS pos
    FROM (SELECT tenant, sum(demand)::bigint AS demand, min(pos) AS first
          FROM asked GROUP BY tenant) AS a
    LEFT JOIN {tenants} AS t ON t.name = a.tenant
), {_water_fill("tenant_share", "tenant_in", "whole")},
class_in AS (
    SELECT t.pos AS tenant_pos, a.rank, t.share,
        sum(a.demand)::bigint AS demand
    FROM asked AS a JOIN tenant_in AS ti ON ti.tenant = a.tenant
    JOIN tenant_share AS t ON t.pos = ti.pos
    GROUP BY t.pos, a.rank, t.share
), class_budget AS (
    SELECT tenant_pos, rank, LEAST(demand, GREATEST(0, share - COALESCE(sum(demand) OVER (
        PARTITION BY tenant_pos ORDER BY rank DESC
        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)))::bigint AS budget
    FROM class_in
), message_in AS (
    SELECT ti.pos AS tenant_pos, a.rank, a.pos, a.demand, c.budget
    FROM asked AS a JOIN tenant_in AS ti ON ti.tenant = a.tenant
    JOIN class_budget AS c ON c.tenant_pos = ti.pos AND c.rank = a.rank
), {_water_fill("message_share", "message_in", "tenant_pos, rank")}
SELECT a.*, m.share FROM asked AS a
JOIN message_share AS m ON m.pos = a.pos
JOIN tenant_share AS t ON t.pos = m.tenant_pos
WHERE m.share > 0 OR a.{keep} IS NOT NULL
ORDER BY m.share = 0, t.extra, m.tenant_pos, m.rank DESC, m.extra, m.pos
"""
