"""The planner's progress on stderr: one redrawn line on a terminal, sparse lines in a log,
and the bracket in words (what Ctrl-C prints)."""

from __future__ import annotations

import io

from sms_sim.cli.plan import _Progress, format_bracket
from sms_sim.sim.plan import PlanProgress


def snapshot(**kwargs: object) -> PlanProgress:
    values: dict[str, object] = dict(settled=2, runs=12, ruled_out_to=130, meets_at=131,
                                     current=None, current_runs=0, replications=10,
                                     elapsed_s=4.2, eta_s=None)
    values.update(kwargs)
    return PlanProgress(**values)  # type: ignore[arg-type]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_one_redrawn_line_on_a_terminal() -> None:
    terminal = FakeTerminal()
    progress = _Progress(terminal, quiet=False)
    progress(snapshot(current=131, current_runs=4, meets_at=None, eta_s=3.0))
    progress(snapshot())
    progress.finish()
    text = terminal.getvalue()
    assert text.count("\r") == 2 and text.count("\n") == 1 and "\x1b[K" in text
    assert "131 senders: run 4/10" in text and "ETA for this count 3 s" in text


def test_progress_in_a_log_is_a_line_per_settled_count_or_two_seconds() -> None:
    log = io.StringIO()
    progress = _Progress(log, quiet=False)
    for runs, settled, elapsed in [(1, 0, 0.1), (2, 0, 0.5), (3, 1, 0.9), (4, 1, 1.0),
                                   (5, 1, 3.0)]:
        progress(snapshot(runs=runs, settled=settled, elapsed_s=elapsed))
    assert len(log.getvalue().splitlines()) == 3


def test_the_bracket_says_what_is_known() -> None:
    assert format_bracket(snapshot()) == ("every count up to 130 misses, 131 meets: the answer "
                                          "is 131")
    assert format_bracket(snapshot(ruled_out_to=120)) == (
        "every count up to 120 misses, 131 meets: the answer is in 121..131")
    assert format_bracket(snapshot(ruled_out_to=0, meets_at=None)) == (
        "no count is ruled out yet; no count has met the goal yet")
