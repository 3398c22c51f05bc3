"""The fair split of a claim as one statement: ``fairness.fair_split`` in SQL.

Why in the database: the split needs every due message's class and ready count and every
tenant's last serve; read, split and answered in one statement, a claim costs one round
trip for it whatever the number of due messages and tenants, and the rule is stated where
the data is. ``tests/properties/test_fair_split.py`` checks this statement against
``fairness.fair_split`` on random inputs: the memory and SQLite stores run that one, and
every store must lease the same rows.

Water filling is done on the distinct demands of a group, not on its rows: a running sum
over them finds the level (``_levels``), so with thousands of 1-recipient messages due
the sort is of a handful of values; each message wanting something then needs one pass
in claim order (a running count hands out the units left over). A message with nothing
ready changes no level (it only counts for its tenant's place in the order) and is
passed over, so the leased 1-recipient messages of a campaign cost little.

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


def _levels(name: str, source: str, group: str) -> str:
    """CTEs ending in ``name``: per group of ``source`` (rows: ``group``'s columns,
    ``demand``, ``budget``: the group's), the water level and the units left over above
    it (``fairness.water_fill``); the level is NULL when the budget covers every demand.

    Over the group's distinct demands in ascending order, with ``k`` items and ``below``
    units under the current one, the first demand ``d`` with ``below + (n - k) * d >
    budget`` sets the level, ``(budget - below) / (n - k)`` whole units (every demand under
    ``d`` is at or under it); those shares take ``below + (n - k) * level``."""
    return f"""
{name}_values AS (
    SELECT {group}, demand, count(*) AS c, min(budget) AS budget
    FROM {source} GROUP BY {group}, demand
), {name}_run AS (
    SELECT {group}, demand, budget, sum(c) OVER g AS n, sum(c * demand) OVER g AS total,
        sum(c) OVER s - c AS k, sum(c * demand) OVER s - c * demand AS below
    FROM {name}_values
    WINDOW g AS (PARTITION BY {group}),
        s AS (PARTITION BY {group} ORDER BY demand ROWS UNBOUNDED PRECEDING)
), {name} AS (
    SELECT DISTINCT ON ({group}) {group}, l.level::bigint,
        COALESCE(budget - below - (n - k) * l.level, 0)::bigint AS left_over
    FROM {name}_run
    CROSS JOIN LATERAL (SELECT CASE WHEN total > budget
                               THEN floor((budget - below) / (n - k)) END AS level) AS l
    WHERE total <= budget OR below + (n - k) * demand > budget
    ORDER BY {group}, demand
)"""


def _share(level: str, left_over: str, nth: str) -> str:
    """A row's share from its group's level and left-over units and its place among the
    group's rows wanting more than the level (``nth``, in claim order)."""
    return (f"(CASE WHEN {level} IS NULL THEN demand ELSE LEAST(demand, {level}) "
            f"+ (demand > {level} AND {nth} <= {left_over})::int END)")


def _extra(level: str, left_over: str, nth: str) -> str:
    """Whether a row's share holds one of its group's left-over units."""
    return f"({level} IS NOT NULL AND demand > {level} AND {nth} <= {left_over})"


def split_sql(asked: str, tenants: str, keep: str) -> str:
    """The split statement over the sources described in the module docstring."""
    return f"""
WITH asked AS MATERIALIZED ({asked}),
tenant_in AS MATERIALIZED (
    SELECT a.tenant, 0 AS whole, a.demand, %(limit)s::bigint AS budget,
        row_number() OVER (ORDER BY COALESCE(t.served_seq, -1), a.first) AS pos
    FROM (SELECT tenant, sum(demand)::bigint AS demand, min(pos) AS first
          FROM asked GROUP BY tenant) AS a
    LEFT JOIN {tenants} AS t ON t.name = a.tenant
), {_levels("tenant_level", "tenant_in", "whole")},
tenant_share AS MATERIALIZED (
    SELECT tenant, pos, share, {_extra("level", "left_over", "nth")} AS extra
    FROM (SELECT t.*, l.level, l.left_over, count(*) FILTER (WHERE t.demand > l.level)
              OVER (ORDER BY t.pos) AS nth
          FROM tenant_in AS t JOIN tenant_level AS l USING (whole)) AS t
    CROSS JOIN LATERAL (SELECT {_share("level", "left_over", "nth")} AS share) AS s
), class_budget AS MATERIALIZED (
    SELECT tenant, rank, LEAST(demand, GREATEST(0, share - COALESCE(sum(demand) OVER (
        PARTITION BY tenant ORDER BY rank DESC
        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)))::bigint AS budget
    FROM (SELECT a.tenant, a.rank, sum(a.demand)::bigint AS demand, min(t.share) AS share
          FROM asked AS a JOIN tenant_share AS t USING (tenant)
          GROUP BY a.tenant, a.rank) AS c
), message_in AS (
    SELECT a.tenant, a.rank, a.demand, c.budget
    FROM asked AS a JOIN class_budget AS c USING (tenant, rank) WHERE a.demand > 0
), {_levels("message_level", "message_in", "tenant, rank")}
SELECT (g.a).*, g.share FROM (
    SELECT m.a, s.share, t.extra AS tenant_extra, t.pos AS tenant_pos,
        {_extra("m.level", "m.left_over", "m.nth")} AS extra
    FROM (SELECT a, a.pos, a.demand, l.level, l.left_over,
              count(*) FILTER (WHERE a.demand > l.level)
                  OVER (PARTITION BY a.tenant, a.rank ORDER BY a.pos) AS nth
          FROM asked AS a LEFT JOIN message_level AS l USING (tenant, rank)
          WHERE a.demand > 0 OR a.{keep} IS NOT NULL) AS m
    JOIN tenant_share AS t ON t.tenant = (m.a).tenant
    CROSS JOIN LATERAL (SELECT {_share("m.level", "m.left_over", "m.nth")} AS share) AS s
) AS g
WHERE g.share > 0 OR (g.a).{keep} IS NOT NULL
ORDER BY g.share = 0, g.tenant_extra, g.tenant_pos, (g.a).rank DESC, g.extra, (g.a).pos
"""
