"""The threaded mode's sender cap follows the host's thread limits (issue 11 item 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sms_sim.config import SenderConfig, SimulationConfig
from sms_sim.errors import ConfigError
from sms_sim.sim.threaded import limits
from sms_sim.sim.threaded.limits import THREADED_SENDERS_MAX, threaded_senders_max
from sms_sim.sim.threaded.run import run


def test_the_cap_is_half_the_tightest_host_limit(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tight, loose, unlimited = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    tight.write_text("300\n", encoding="ascii")
    loose.write_text("100000\n", encoding="ascii")
    unlimited.write_text("max\n", encoding="ascii")
    monkeypatch.setattr(limits, "_LIMIT_FILES", (loose, tight, unlimited, tmp_path / "none"))
    assert threaded_senders_max() == 150
    monkeypatch.setattr(limits, "_LIMIT_FILES", (unlimited,))
    assert threaded_senders_max() <= THREADED_SENDERS_MAX


def test_run_refuses_more_senders_than_the_cap_before_starting_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = tmp_path / "threads-max"
    limit.write_text("8\n", encoding="ascii")
    monkeypatch.setattr(limits, "_LIMIT_FILES", (limit,))
    config = SimulationConfig(num_messages=1, senders=[SenderConfig(0.001, 0.0, 0.0)] * 8, seed=1)
    with pytest.raises(ConfigError, match=r"senders must be <= 4 in all for real threads"):
        run(config, output=None)
