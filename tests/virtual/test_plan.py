"""Capacity planning: the answer is the smallest count whose prediction bound meets the
deadline, rows are reproducible, and the CLI speaks JSON, CSV and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sms_sim import ConfigError, SenderConfig, SimulationConfig
from sms_sim.sim.plan import fluid_estimate, plan
from sms_sim.sim.theory import student_t_quantile
from tests.conftest import ROOT

SENDER = SenderConfig(0.08, 0.02, 0.03)


def base(messages: int = 5_000) -> SimulationConfig:
    return SimulationConfig(num_messages=messages, senders=[SENDER], seed=1)


def test_min_senders_is_the_smallest_count_meeting_the_bound() -> None:
    deadline = 60.0
    result = plan(base(), SENDER, deadline_s=deadline, replications=5)
    assert result.min_senders is not None
    rows = {row.senders: row for row in result.rows}
    assert rows[result.min_senders].meets_deadline
    assert not rows[result.min_senders - 1].meets_deadline
    assert all(row.meets_deadline == (row.makespan_upper_s <= deadline) for row in result.rows)
    # More senders, shorter makespan, for every pair in the sweep.
    means = [row.makespan_mean_s for row in result.rows]
    assert means == sorted(means, reverse=True)
    # The fluid estimate N m / deadline is close to (and not above) the simulated answer.
    assert fluid_estimate(base(), SENDER, deadline) <= result.min_senders <= 1.2 * fluid_estimate(
        base(), SENDER, deadline) + 1


def test_plan_is_reproducible_and_uses_the_t_interval() -> None:
    first = plan(base(2_000), SENDER, deadline_s=30, replications=4, sender_counts=[4, 8])
    second = plan(base(2_000), SENDER, deadline_s=30, replications=4, sender_counts=[4, 8])
    assert first == second
    row = first.rows[0]
    # half-width = t(0.975, 3) * s / sqrt(4); upper = mean + t(0.95, 3) * s * sqrt(1 + 1/4)
    s = row.makespan_ci_s / student_t_quantile(0.975, 3) * 2
    assert row.makespan_upper_s == pytest.approx(
        row.makespan_mean_s + student_t_quantile(0.95, 3) * s * (1.25**0.5)
    )


def test_student_t_matches_tables() -> None:
    for p, df, table in [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776),
                         (0.975, 9, 2.262), (0.95, 9, 1.833), (0.975, 30, 2.042)]:
        assert student_t_quantile(p, df) == pytest.approx(table, abs=2e-3)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"deadline_s": 0.0}, "deadline must be > 0"),
     ({"deadline_s": 10.0, "replications": 1}, "replications must be >= 2"),
     ({"deadline_s": 10.0, "sender_counts": [0]}, "sender counts must be >= 1")],
)
def test_bad_plan_arguments(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        plan(base(), SENDER, **kwargs)  # type: ignore[arg-type]


def run_plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sms_sim", "plan", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


@pytest.mark.slow  # subprocesses
def test_cli_plan_json_and_csv() -> None:
    common = ["--messages", "2000", "--mean", "0.08", "--deviation", "0.02", "--failure-rate",
              "0.03", "--deadline", "30", "--replications", "3", "--jobs", "1", "--quiet"]
    result = run_plan(*common, "--json", "--senders", "4:8:2")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [row["senders"] for row in data["rows"]] == [4, 6, 8]
    assert isinstance(data["min_senders"], int)
    csv_result = run_plan(*common, "--csv", "--senders", "5,7")
    lines = csv_result.stdout.splitlines()
    assert lines[0].startswith("senders,makespan_mean_s,makespan_ci_s")
    # The two asked-for counts, plus the answer's own row (6 senders) added between them.
    assert [line.split(",")[0] for line in lines[1:]] == ["5", "6", "7"]
    table = run_plan(*common)
    assert "min senders:" in table.stdout and "misses" in table.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--mean", "0.08", "--deadline", "10"], "the following arguments are required: --messages"),
     (["--messages", "10", "--mean", "x", "--deadline", "10"], "argument --mean: not a number"),
     (["--messages", "10", "--mean", "0.1", "--deadline", "0"], "argument --deadline: must be > 0"),
     (["--messages", "10", "--mean", "0.1", "--deadline", "5", "--senders", "0:3"],
      "sender counts must be >= 1"),
     (["--messages", "10", "--mean", "0.1", "--deviation", "0.5", "--deadline", "5"],
      "deviation must be <= mean")],
)
@pytest.mark.slow  # a subprocess
def test_cli_plan_bad_input_is_one_line(args: list[str], fragment: str) -> None:
    result = run_plan(*args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # a subprocess
def test_plot_without_matplotlib_says_how_to_install_it(tmp_path: Path) -> None:
    try:  # matplotlib is absent from the dev venv
        import matplotlib  # noqa: F401
        pytest.skip("matplotlib is installed here")
    except ImportError:
        pass
    result = run_plan("--messages", "10", "--mean", "0.1", "--deadline", "5",
                      "--plot", str(tmp_path / "p.png"))
    assert result.returncode == 1
    assert result.stderr.strip().endswith("--plot needs matplotlib: pip install 'sms_sim[plot]'")


def test_an_impossible_deadline_is_answered_not_searched_forever() -> None:
    """No count can beat one send (10 ms): the search stops once doubling the senders no
    longer shortens the makespan, and says no count meets the deadline."""
    sender = SenderConfig(0.01, 0.0, 0.0)
    config = SimulationConfig(num_messages=100, senders=[sender], seed=1)
    result = plan(config, sender, deadline_s=0.001, replications=3)
    assert result.min_senders is None
    assert max(row.senders for row in result.rows) <= 2_000
