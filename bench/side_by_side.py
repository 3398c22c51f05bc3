"""Old and new code on every bench, in one run: each bench script of this checkout and of an
older one (a ``git worktree``), alternating, with every figure they print set side by side.

What is run: for each bench named (default: every ``bench/*.py`` both checkouts have, this
script and the PostgreSQL ones aside), ``python3 bench/NAME.py ARGS`` from each checkout's
root, so each side runs its own bench against its own ``sms_sim`` (``-c`` and ``-m``
children import it from the working directory too). The two sides take turns ``--rounds``
times, rotating which goes first. ``ARGS`` are the bench's own options (``--bench-args
'NAME=--runs 1'``); by default every bench runs with its own defaults.

How the figures are matched: a bench prints lines such as ``ours msg/s: 177704 (runs 177704)``
or ``ratio 0.99``. Each line is read as a template (its text with every number taken out)
and its numbers. A template printed by both sides in every round is one row: per number
slot, the median of the rounds on each side, new/old, and the spread of each side's rounds
(max/min), so a ratio can be read against the run-to-run spread. Slots that are the same on
both sides (targets, N) are printed once. Lines the two versions word differently are
printed under "only old" / "only new" and compared by eye.

Why: a restructure or a hot-path change must keep every figure. Each bench already measures
its side against a floor in one run; this puts the code before the change beside the code
after it, on one machine at one time, since these machines are shared and a figure from
another day says little.

Command (from the repo root): python3 bench/side_by_side.py --old REV_OR_DIR [--new
REV_OR_DIR] [--rounds 3] [--only NAME ...] [--bench-args 'NAME=ARGS' ...] [--keep DIR]
(``--old`` and ``--new`` take a checkout directory, or a commit, of which a ``git worktree``
is added in a temporary directory and removed at the end; ``--new`` defaults to this
checkout as it is, uncommitted changes included.)
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when loaded by path

from _common import ROOT, git_commit, worktree  # noqa: E402
# Not benches of the code's speed (this script), or benches that need a PostgreSQL server
# and take --baseline themselves.
_SKIP = frozenset({"side_by_side"})
_PG_PREFIXES = ("pg_", "claim_many_due")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")
_CHANGE_SPEC = ".3f"
_VERDICT = re.compile(r"\b(?:PASS|FAIL)\b")


def _benches(root: Path) -> set[str]:
    return {path.stem for path in (root / "bench").glob("*.py")
            if not path.stem.startswith("_") and path.stem not in _SKIP
            and not path.stem.startswith(_PG_PREFIXES)}


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _figures(output: str) -> dict[str, list[float]]:
    """Each output line as template -> its numbers (``_lines``)."""
    return {key: numbers for key, numbers, _ in _lines(output)}


def _lines(output: str) -> list[tuple[str, list[float], str]]:
    """Each output line with a number as (template, its numbers, its verdict words). A
    template printed again (``S=4 ...``, ``S=100 ...``) is told apart by its occurrence:
    `` (2nd)``."""
    found: list[tuple[str, list[float], str]] = []
    seen_keys: set[str] = set()
    for line in output.splitlines():
        numbers = _NUMBER.findall(line)
        if not numbers:
            continue
        # Alignment padding changes with a number's width: one space matches any run.
        # A verdict may differ from run to run; the figures beside it still pair up.
        template = " ".join(_NUMBER.sub("#", _VERDICT.sub("PASS/FAIL", line)).split())
        key, seen = template, 1
        while key in seen_keys:
            seen += 1
            key = f"{template} ({_ordinal(seen)})"
        seen_keys.add(key)
        found.append((key, [_number(n) for n in numbers], " ".join(_VERDICT.findall(line))))
    return found


def _ordinal(n: int) -> str:
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n if n < 20 else n % 10, 'th')}"


def _one_run(template: str) -> bool:
    """A line about one of a bench's own runs: its summary lines carry the median."""
    return "run #:" in template


@contextlib.contextmanager
def _checkout(old: str) -> Iterator[Path]:
    """``old`` as a directory: itself, or a temporary worktree of that commit."""
    if Path(old).is_dir():
        yield Path(old)
        return
    with worktree(old) as tree:
        yield tree


class BenchCrashed(Exception):
    """A bench that stopped with a traceback or a usage error: no figures to compare."""


def _run(root: Path, bench: str, args: Sequence[str]) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, f"bench/{bench}.py", *args], cwd=root,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    # 1 is also a bench's own FAIL verdict, which still prints its figures; a traceback is not.
    if done.returncode not in (0, 1) or "Traceback" in done.stderr:
        raise BenchCrashed(f"exited {done.returncode}: "
                           f"{(done.stderr.strip().splitlines() or ['(no output)'])[-1]}")
    return done.stdout, wall


def _row(template: str, old: list[list[float]], new: list[list[float]]) -> str:
    """One template filled in: each slot's old -> new median (or the one value both share),
    then new/old and each side's spread for the first slot that differs."""
    slots = len(old[0])
    parts = template.split("#")
    text = parts[0]
    compared = ""
    for slot in range(slots):
        olds = [numbers[slot] for numbers in old]
        news = [numbers[slot] for numbers in new]
        old_median, new_median = statistics.median(olds), statistics.median(news)
        if olds == news and len(set(olds)) == 1:
            text += _show(old_median)
        else:
            text += f"[{_show(old_median)} -> {_show(new_median)}]"
            if not compared and old_median:
                compared = (f"  new/old {new_median / old_median:{_CHANGE_SPEC}}"
                            f"  spread old {_spread(olds)} new {_spread(news)}")
        text += parts[slot + 1]
    return text.strip() + compared


def _show(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"


def _spread(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{high / low:.2f}x" if low > 0 else "-"


def _compare(bench: str, outputs: dict[str, list[str]], walls: dict[str, list[float]]) -> None:
    rounds = {side: [_figures(text) for text in texts] for side, texts in outputs.items()}
    # A verdict every round of both sides printed is shown as printed, not as PASS/FAIL.
    verdicts: dict[str, set[str]] = {}
    for text in outputs["old"] + outputs["new"]:
        for key, _, verdict in _lines(text):
            verdicts.setdefault(key, set()).add(verdict)
    common = [t for t in rounds["new"][0]
              if all(t in figures for figures in rounds["new"] + rounds["old"])
              and len({len(f[t]) for f in rounds["new"] + rounds["old"]}) == 1]
    print(f"\n== {bench}: {len(outputs['new'])} rounds, medians; wall old "
          f"{statistics.median(walls['old']):.1f} s, new {statistics.median(walls['new']):.1f} s")
    for template in common:
        if _one_run(template):
            continue
        row = _row(template, [f[template] for f in rounds["old"]],
                   [f[template] for f in rounds["new"]])
        if len(verdicts[template]) == 1 and row.count("PASS/FAIL") == 1:
            row = row.replace("PASS/FAIL", next(iter(verdicts[template])), 1)
        print("  " + row)
    for side, other in (("old", "new"), ("new", "old")):
        only = [t for t in rounds[side][0] if t not in rounds[other][0]
                and not _one_run(t)]
        if only:
            print(f"  only {side} (round 1):")
            for template in only:
                print("    " + _fill(template, rounds[side][0][template]))


def _fill(template: str, numbers: list[float]) -> str:
    parts = template.split("#")
    return (parts[0] + "".join(_show(n) + rest for n, rest in zip(numbers, parts[1:],
                                                                  strict=True))).strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--old", required=True, metavar="REV_OR_DIR",
                        help="the older code: a checkout directory or a commit")
    parser.add_argument("--new", metavar="REV_OR_DIR",
                        help="the newer code (default: this checkout, as it is)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side (default 3)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these benches only")
    parser.add_argument("--bench-args", action="append", default=[], metavar="NAME=ARGS",
                        help="options for one bench, e.g. 'overhead=--runs 1'")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="also write every run's own output to DIR/NAME.SIDE.ROUND.txt")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1 (got {args.rounds})")
    extra: dict[str, list[str]] = {}
    for item in args.bench_args:
        name, sep, options = item.partition("=")
        if not sep:
            parser.error(f"--bench-args takes NAME=ARGS (got {item!r})")
        extra[name] = shlex.split(options)
    with _checkout(args.old) as old_root, _checkout(args.new or str(ROOT)) as new_root:
        names = sorted(_benches(new_root) & _benches(old_root))
        if args.only:
            unknown = sorted(set(args.only) - set(names))
            if unknown:
                parser.error(f"not a bench both checkouts have: {', '.join(unknown)} "
                             f"(both have: {', '.join(names)})")
            names = [name for name in names if name in args.only]
        roots = {"old": old_root, "new": new_root}
        print(f"old: {git_commit(old_root)}; new: {git_commit(new_root)}; "
              f"benches: {', '.join(names)}")
        crashed = 0
        for bench in names:
            outputs: dict[str, list[str]] = {"old": [], "new": []}
            walls: dict[str, list[float]] = {"old": [], "new": []}
            try:
                for round_ in range(args.rounds):
                    order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
                    for side in order:
                        text, wall = _run(roots[side], bench, extra.get(bench, []))
                        if args.keep is not None:
                            args.keep.mkdir(parents=True, exist_ok=True)
                            (args.keep / f"{bench}.{side}.{round_ + 1}.txt").write_text(text)
                        outputs[side].append(text)
                        walls[side].append(wall)
            except BenchCrashed as exc:
                crashed += 1
                print(f"\n== {bench}: the {side} side {exc}; nothing to compare")
            else:
                _compare(bench, outputs, walls)
            sys.stdout.flush()
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
