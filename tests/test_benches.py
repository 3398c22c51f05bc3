"""Every bench script still runs against today's code, at a size that takes seconds.

The benches reach into the stores, the schema and the provider interface, and nothing else
runs them: two of them (``dispatch_insert``, ``dispatch_fairness``) stopped with a traceback
when messages gained their ``uid`` and nobody saw it until the figures were wanted. Here
only that each runs to its verdict is checked, never a figure (these machines are shared,
STYLE.md section 9). The PostgreSQL benches run against the session's server; only
``plan_speed`` is left out, since it builds an old planner's worktree and runs it: minutes,
not seconds (``side_by_side`` runs the others).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.pg_cluster import PgCluster

pytestmark = pytest.mark.slow

SMALL = {
    "overhead": ["--quick", "--runs", "1"],
    "generation": ["--quick", "--runs", "1"],
    "memory": ["--quick", "--runs", "1"],
    "virtual_memory": ["--quick", "--runs", "1"],
    "virtual_speed": ["--quick", "--runs", "1"],
    "fidelity": ["--quick", "--runs", "1", "--senders", "4"],
    "dispatch_insert": ["--runs", "1", "--recipients", "2000"],
    "dispatch_fairness": ["--runs", "1", "--broadcast", "2000", "--scheduled", "3"],
    "dispatch_throughput": ["--quick", "--runs", "1"],
    "dispatch_urgency": ["--quick", "--urgent", "2", "--window", "1"],
    "dispatch_big_submit": ["--quick"],
    "dispatch_soak": ["--messages", "2", "--recipients", "50", "--chaos", "1",
                      "--only", "classic"],
    "claim_many_due": ["--no-postgres", "--messages", "2000", "--batch", "250", "--runs", "1"],
    "api_submit_rate": ["--quick"],
    "api_big_submit": ["--quick"],
    "api_get_latency": ["--quick"],
}
# With --dsn SERVER (the session's): each makes and drops databases of its own.
SMALL_ON_POSTGRES = {
    "pg_drain": ["--quick", "--runs", "1", "--no-pgqueuer"],
    "pg_claim_cost": ["--quick", "--runs", "1"],
    "pg_fairness": ["--quick"],
    "pg_row_writes": ["--runs", "1", "--recipients", "2000", "--batch", "100", "--chunks", "5"],
    "pg_submit": ["--quick", "--runs", "1"],
    "pg_vacuum": ["--quick", "--runs", "1"],
}
NOT_HERE = {"plan_speed", "side_by_side"}


def test_every_bench_is_run_here_or_said_not_to_be() -> None:
    scripts = {path.stem for path in (ROOT / "bench").glob("*.py")
               if not path.stem.startswith("_")}
    assert scripts - NOT_HERE == set(SMALL) | set(SMALL_ON_POSTGRES)


@pytest.mark.parametrize("bench", sorted(SMALL))
def test_a_bench_runs_to_its_verdict(bench: str) -> None:
    _runs_to_its_verdict(bench, SMALL[bench])


@pytest.mark.parametrize("bench", sorted(SMALL_ON_POSTGRES))
def test_a_postgres_bench_runs_to_its_verdict(bench: str, pg_cluster: PgCluster) -> None:
    _runs_to_its_verdict(bench, [*SMALL_ON_POSTGRES[bench], "--dsn", pg_cluster.admin_dsn])


def _runs_to_its_verdict(bench: str, arguments: list[str]) -> None:
    done = subprocess.run([sys.executable, f"bench/{bench}.py", *arguments], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    # 1 is a bench's own FAIL verdict at a size too small for its target; a crash is not.
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stdout.strip(), done.stderr[-3000:]
