"""``sms-sim plan`` through real subprocesses (issue 10): the answers, the refusals in one
line before any work, progress and Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SENDERS_MAX = 100_000  # sms_sim.config.SENDERS_MAX (not imported: this module runs on the
# commit before issue 10 too, to show which of its tests fail there)

TIMEOUT_S = 120
SMALL = ["--messages", "2000", "--mean", "0.08", "--deviation", "0.02", "--deadline", "30",
         "--replications", "3", "--jobs", "1"]


def run_plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sms_sim", "plan", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S)


@pytest.mark.slow  # a subprocess
def test_the_issues_reproduction_answers_4() -> None:
    """The exact command of issue 10; the planner before it answered "min senders: 6"."""
    result = run_plan("--messages", "500", "--mean", "0.05", "--deadline", "11.05",
                      "--replications", "5", "--arrivals", "poisson:50", "--senders", "3:7",
                      "--jobs", "1")
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]
    assert last.startswith("min senders: 4 deliver 100 % of 500 messages within 11.05 s "
                           "with 95 % confidence; 3 misses"), last
    verdicts = [line.split()[-1] for line in result.stdout.splitlines()[2:-1]]
    assert verdicts == ["misses", "meets", "meets", "meets", "meets"]


@pytest.mark.slow  # a subprocess
def test_a_goal_nothing_can_meet_is_never_claimed() -> None:
    """``--failure-rate 1``: the planner before issue 10 answered "min senders: 1 finish
    1000 messages". Now it must be told what counts, and then says no count delivers it."""
    common = ["--messages", "1000", "--mean", "0.05", "--failure-rate", "1", "--deadline",
              "100", "--jobs", "1", "--quiet"]
    unsaid = run_plan(*common)
    assert unsaid.returncode == 2
    assert unsaid.stderr.count("\n") == 1 and "use --deliver" in unsaid.stderr
    text = run_plan(*common, "--deliver", "0.5")
    assert text.returncode == 0, text.stderr
    assert "min senders" not in text.stdout
    assert text.stdout.splitlines()[-1] == ("no count delivers 50 % of 1000 messages: with "
                                            "failure rate 1 and 1 attempt per message none is "
                                            "ever delivered")
    data = json.loads(run_plan(*common, "--deliver", "0.5", "--json").stdout)
    assert data["min_senders"] is None and data["reason"].startswith("no count delivers")


@pytest.mark.slow  # a subprocess
def test_json_and_csv_carry_the_rows() -> None:
    result = run_plan(*SMALL, "--failure-rate", "0.03", "--deliver", "0.95", "--json",
                      "--senders", "4:8:2", "--percentile", "50,99.9", "--quiet")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    counts = [row["senders"] for row in data["rows"]]
    assert {4, 6, 8} <= set(counts) and data["min_senders"] in counts
    full = next(row for row in data["rows"] if row["senders"] == 4)
    assert full["runs"] == 3 and full["upper_s"] is not None
    assert full["percentile_times_s"][1] is None  # 99.9 % is never delivered: null, not inf
    csv_result = run_plan(*SMALL, "--failure-rate", "0.03", "--deliver", "0.95", "--csv",
                          "--quiet")
    lines = csv_result.stdout.splitlines()
    assert lines[0].startswith("senders,replications,runs,meets,time_mean_s,upper_s")
    assert len(lines) >= 3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--mean", "0.08", "--deadline", "10"], "the following arguments are required: --messages"),
     (["--messages", "10", "--mean", "x", "--deadline", "10"], "argument --mean: not a number"),
     (["--messages", "10", "--mean", "0.1", "--deadline", "0"], "argument --deadline: must be > 0"),
     (["--messages", "10", "--mean", "1e308", "--deadline", "10"], "--mean must be <= 1e+09"),
     (["--messages", "10", "--mean", "0.1", "--deadline", "1e308"],
      "--deadline must be <= 1e+09"),
     (["--messages", "10", "--mean", "0.1", "--deadline", "5", "--confidence", "0"],
      "argument --confidence: must be at least 0.5 and below 1"),
     (["--messages", "10", "--mean", "0.1", "--deadline", "5", "--confidence", "1"],
      "argument --confidence: must be at least 0.5 and below 1"),
     (["--messages", "10", "--mean", "0.1", "--deadline", "5", "--senders", "1:100000000000"],
      f"sender counts must be in 1..{SENDERS_MAX}"),
     (["--messages", "10", "--mean", "0.1", "--deadline", "5", "--senders", "1:5000"],
      "at most 1000 sender counts"),
     (["--messages", "10000000000000", "--mean", "0.1", "--deadline", "5"],
      "--messages must be <= 1000000000000"),
     (["--messages", "10", "--mean", "0.1", "--deviation", "0.5", "--deadline", "5"],
      "--deviation must be <= --mean"),
     (["--messages", "10", "--mean", "0.1", "--deadline", "5", "--failure-rate", "0.5"],
      "say what fraction must be delivered")],
)
@pytest.mark.slow  # a subprocess
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    result = run_plan(*args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.slow  # a subprocess
def test_a_tiny_deadline_is_an_answer_not_a_traceback() -> None:
    result = run_plan("--messages", "100", "--mean", "0.1", "--deadline", "1e-300", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == ("no count meets 1e-300 s: one send takes at "
                                              "least 0.1 s")


@pytest.mark.parametrize(
    ("plot", "fragment"),
    [("chart", "the file name must end in .png, .pdf, .svg (got"),
     ("chart.gif", "the file name must end in .png, .pdf, .svg"),
     ("missing/chart.png", "no such directory"),
     (".", "the file name must end in"),
     # Permissions let root through, but /proc takes no new file: a traceback after the
     # whole plan had run.
     ("/proc/sms_sim_chart.png", "cannot write '/proc/sms_sim_chart.png'")],
)
@pytest.mark.slow  # a subprocess
def test_a_plot_that_cannot_be_written_is_refused_before_any_work(
    tmp_path: Path, plot: str, fragment: str
) -> None:
    """``--plot FILE`` without an extension used to write FILE.png silently, and a bad
    directory failed only after the whole plan had run."""
    result = run_plan("--messages", "10000000", "--mean", "0.1", "--deadline", "5",
                      "--plot", str(tmp_path / plot))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # a subprocess
def test_plot_without_matplotlib_says_how_to_install_it(tmp_path: Path) -> None:
    """The dev venv has matplotlib (the plot test needs it): the child hides it the way an
    environment without the extra would, by making its import fail."""
    hide = ("import sys; sys.modules['matplotlib'] = None; "
            "from sms_sim.cli import main; sys.exit(main(sys.argv[1:], prog='sms_sim'))")
    result = subprocess.run(
        [sys.executable, "-c", hide, "plan", "--messages", "10", "--mean", "0.1",
         "--deadline", "5", "--plot", str(tmp_path / "p.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("--plot needs matplotlib: pip install 'sms_sim[plot]'")
    assert not list(tmp_path.iterdir())


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # a subprocess and a signal
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_prints_the_bracket_and_exits_130_or_143(signum: int, code: int) -> None:
    """A plan big enough to take a while; SIGINT (or SIGTERM) once the first count has been
    settled: the last line says what is known, the exit code is 130 (143), and no worker is
    left behind. SIGTERM printed a traceback from each pool worker (they had inherited the
    CLI's handler, which raises)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sms_sim", "plan", "--messages", "3000000", "--mean", "0.08",
         "--deviation", "0.02", "--deadline", "600", "--jobs", "2", "--replications", "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As from a terminal: a test run started in the background (``&`` in a script)
        # ignores SIGINT, and Python then leaves it ignored in the child too.
        preexec_fn=_default_sigint)
    assert process.stderr is not None
    try:
        for line in process.stderr:
            if "runs in" in line:
                break
        process.send_signal(signum)
        out, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("python3 -m sms_sim plan: interrupted; ")
    assert out == ""


def test_the_plot_shows_the_deadline_the_answer_and_integer_senders(tmp_path: Path) -> None:
    """Needs the [plot] extra: skipped where matplotlib is absent (the dev venv)."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    from matplotlib.ticker import MaxNLocator

    from sms_sim.cli.plan import draw
    from sms_sim.config import DeliveryGoal, SenderConfig, SimulationConfig
    from sms_sim.sim.plan import plan

    sender = SenderConfig(0.08, 0.02, 0.0)
    result = plan(SimulationConfig(num_messages=2000, senders=[sender], seed=1), sender,
                  DeliveryGoal(deadline_s=30.0, replications=3), sweep=True)
    figure = draw(pyplot, result)
    axes = figure.axes[0]
    assert axes.get_title() == "Delivering 100 % of 2000 messages within 30 s"
    assert isinstance(axes.xaxis.get_major_locator(), MaxNLocator)
    assert all(float(tick).is_integer() for tick in axes.get_xticks())
    labels = [line.get_label() for line in axes.get_lines()]
    assert "deadline 30 s" in labels and f"answer: {result.min_senders} senders" in labels
    pyplot.close(figure)
    # And through the command line, to the file asked for (and no other).
    path = tmp_path / "plan.svg"
    written = run_plan("--messages", "2000", "--mean", "0.08", "--deviation", "0.02",
                       "--deadline", "30", "--replications", "3", "--jobs", "1", "-q",
                       "--plot", str(path))
    assert written.returncode == 0, written.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["plan.svg"]
    assert path.read_text(encoding="utf-8").lstrip().startswith("<?xml")


@pytest.mark.slow  # a subprocess
def test_a_time_not_reached_when_the_runs_stopped_is_later_than_the_deadline_not_never() -> None:
    # Runs stop past the deadline (at the planner's horizon): "never" said more than known.
    result = run_plan("--messages", "300", "--mean", "0.01", "--deadline", "1",
                      "--percentile", "90", "--jobs", "1", "-q")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()
            if line.split() and line.split()[0].isdigit()}
    assert rows["2"][2:4] == [">1", ">=1.490"] and rows["2"][-1] == "misses"
    assert rows["3"][-1] == "meets" and "never" not in result.stdout
    assert result.stdout.splitlines()[-1].startswith("min senders: 3 ")
