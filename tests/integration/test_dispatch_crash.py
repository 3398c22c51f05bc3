"""Crash test: worker processes on one SQLite file, SIGKILLed and SIGSTOPped past their lease.

The audit reads the provider's ledger (a separate file the workers' transport writes), not
the store: zero effective duplicates and nothing lost with fencing on, and duplicates found
with fencing and keys off, which proves the check can fail. The large version with all
figures is ``bench/dispatch_soak.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.chaos_harness import run_chaos

# Real threads, processes or wall-clock waits (STYLE.md section 10).
pytestmark = pytest.mark.slow


def test_killed_and_paused_workers_never_deliver_twice_and_lose_nothing(tmp_path: Path) -> None:
    result = run_chaos(tmp_path, messages=3, recipients=300, workers=3, lease_s=0.5, seed=11,
                       chaos_for_s=2.0)
    assert result.finished, result.worker_logs[-1]
    assert result.kills >= 1 and result.pauses >= 1
    assert set(result.statuses) <= {"sent", "dead"} and sum(result.statuses.values()) == 900
    assert result.lost == 0
    assert result.ledger.effective_duplicates == 0
    assert result.ledger.recipients_delivered == result.statuses["sent"]
    assert result.refused >= 1  # the paused worker's late completions were refused
    assert result.integrity == "ok"
    # No worker died of its own accord (a KeyError here once hid a re-claim bug).
    assert not [log for log in result.worker_logs if "Traceback" in log]


def test_the_same_chaos_without_fencing_or_keys_is_caught_delivering_twice(
        tmp_path: Path) -> None:
    result = run_chaos(tmp_path, messages=3, recipients=300, workers=3, lease_s=0.5, seed=11,
                       chaos_for_s=2.0, fencing=False)
    assert result.finished
    assert result.ledger.effective_duplicates > 0
