"""Pieces shared by the bench scripts: options, alternating runs, report lines, child peak RSS.

A plain module, not a package: each script imports it as ``_common``, which works because
running ``python3 bench/<name>.py`` puts ``bench/`` first on ``sys.path``. It never imports
``sms_sim``, so the memory benches' parent process stays free of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")

ROOT = Path(__file__).resolve().parent.parent
KIB_PER_MIB = 1024

# The program of a memory child: it imports ``imports``, builds a burst config of ``n``
# messages on ``senders`` zero-latency senders, runs ``workload`` (which sets ``count`` to the
# messages it handled) and prints its peak RSS and ``count`` as JSON.
_CHILD = """\
import json, resource, sys
sys.path.insert(0, {root!r})
{imports}
config = sms_sim.SimulationConfig(
    num_messages={n}, senders=[sms_sim.SenderConfig(0.0, 0.0, 0.0)] * {senders}, seed={seed}
)
count = 0
{workload}usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"maxrss_kib": usage.ru_maxrss, "count": count}}))
"""


# ---- options -------------------------------------------------------------------------------


def parse_args(
    doc: str | None,
    argv: Sequence[str] | None,
    *,
    runs: int,
    runs_help: str = "repetitions per side",
    messages: tuple[int, int] | None = None,
    quick_help: str | None = None,
    add_options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Parse ``--runs``, then ``--messages`` (when ``messages`` is given), the script's own
    options (``add_options``) and ``--quick``; refuse ``--runs`` below 1.

    ``messages`` is (default N, N under ``--quick``); ``--quick`` overrides ``--messages``.
    ``quick_help`` defaults to "N = <quick N>".
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--runs", type=int, default=runs, help=f"{runs_help} (default {runs})")
    if messages is not None:
        parser.add_argument("--messages", type=int, default=messages[0],
                            help=f"N (default {messages[0]})")
        quick_help = quick_help or f"N = {messages[1]}"
    if add_options is not None:
        add_options(parser)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1 (got {args.runs})")
    if messages is not None and args.quick:
        args.messages = messages[1]
    return args


# ---- running the sides ---------------------------------------------------------------------


def rotate(sides: Mapping[str, Callable[[], T]], runs: int) -> dict[str, list[T]]:
    """Run every side ``runs`` times, rotating which goes first from run to run."""
    names = list(sides)
    results: dict[str, list[T]] = {name: [] for name in names}
    for run in range(runs):
        shift = run % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(sides[name]())
    return results


def alternate(
    first: Callable[[], A], second: Callable[[], B], runs: int
) -> tuple[list[A], list[B]]:
    """Run two sides ``runs`` times each, alternating which goes first (``first`` in run 0)."""
    firsts: list[A] = []
    seconds: list[B] = []
    rotate({"first": lambda: firsts.append(first()),
            "second": lambda: seconds.append(second())}, runs)
    return firsts, seconds


# ---- report lines --------------------------------------------------------------------------


def fmt_runs(values: Sequence[float], spec: str) -> str:
    return " ".join(f"{v:{spec}}" for v in values)


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def print_header(subject: str, runs: int) -> None:
    print(f"{subject}, median of {runs} runs")


def print_runs(label: str, values: Sequence[float], spec: str) -> float:
    """Print ``  label: median (runs v1 v2 ...)``, each figure as ``spec``; return the median."""
    median = statistics.median(values)
    print(f"  {label}: {median:{spec}} (runs {fmt_runs(values, spec)})")
    return median


def print_target(label: str, passed: bool | None, detail: str | None = None) -> None:
    """Print ``  label: PASS|FAIL|SKIP`` (SKIP when ``passed`` is None), then `` (detail)``."""
    outcome = "SKIP" if passed is None else verdict(passed)
    print(f"  {label}: {outcome}" + ("" if detail is None else f" ({detail})"))


class Side(NamedTuple):
    """One side of ``compare_rates``: its name in the ratio, its line's label, its measure."""

    name: str
    label: str
    rate: Callable[[int], float]


def compare_rates(
    header: str, runs: int, num_messages: int, ours: Side, other: Side, *,
    target: float, ratio_spec: str, unit: str = "",
) -> None:
    """Alternate two rate sides on ``num_messages``, then print the header, each side's median
    line (whole numbers), their ratio as ``ratio_spec`` + ``unit`` and the target ratio >=
    ``target``."""
    ours_rates, other_rates = alternate(
        lambda: ours.rate(num_messages), lambda: other.rate(num_messages), runs
    )
    print_header(header, runs)
    ours_rate = print_runs(ours.label, ours_rates, ".0f")
    other_rate = print_runs(other.label, other_rates, ".0f")
    ratio = ours_rate / other_rate
    ratio_name = f"{ours.name}/{other.name}"
    print(f"  {ratio_name}: {ratio:{ratio_spec}}{unit}")
    print_target(f"target {ratio_name} >= {target:g}{unit}", ratio >= target)


# ---- peak RSS of a child interpreter -------------------------------------------------------


def child_code(imports: str, num_messages: int, senders: int, seed: int, workload: str) -> str:
    """The ``python -c`` program of a memory child (see ``_CHILD``)."""
    return _CHILD.format(root=str(ROOT), imports=imports, n=num_messages, senders=senders,
                         seed=seed, workload=workload)


def peak_rss_mib(code: str, expected: int, handled: str) -> float:
    """Run ``code`` (from ``child_code``) in a fresh interpreter; return its peak RSS in MiB.

    Raises if the child failed or its ``count`` is not ``expected`` (the message names the
    child as ``handled``, e.g. "child sent").
    """
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    if figures["count"] != expected:
        raise RuntimeError(f"{handled} {figures['count']} of {expected} messages")
    return float(figures["maxrss_kib"]) / KIB_PER_MIB


# ---- another checkout of this repository ---------------------------------------------------


def add_checkout_options(parser: argparse.ArgumentParser) -> None:
    """``--repo PATH`` (measure that checkout instead of this one) and ``--against REV``
    (measure a ``git worktree`` of REV beside it: the "old figure")."""
    parser.add_argument("--repo", type=Path, default=ROOT, metavar="PATH",
                        help="the checkout whose CLI is measured (default: this one)")
    parser.add_argument("--against", metavar="REV",
                        help="also measure REV (e.g. HEAD~1) from a temporary git worktree, "
                             "removed at the end")


def cli_command(repo: Path) -> list[str]:
    """How to run the CLI of the checkout at ``repo`` (use with ``cli_env(repo)``)."""
    return [sys.executable, str(repo / "start.py")]


def cli_env(repo: Path) -> dict[str, str]:
    """The environment for ``cli_command(repo)``: that checkout's ``sms_sim`` first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def checkouts(args: argparse.Namespace) -> Iterator[list[tuple[str, Path]]]:
    """The sides to measure as (label, checkout): ``--repo`` as "new", then, with
    ``--against REV``, a detached ``git worktree`` of REV as "old REV", removed on exit."""
    sides = [("new", Path(args.repo).resolve())]
    if args.against is None:
        yield sides
        return
    with worktree(args.against) as tree:
        yield [*sides, (f"old {args.against}", tree)]


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A detached ``git worktree`` of ``rev`` in a temporary directory, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="sms_sim-worktree-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet",
                        str(tree), rev], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], check=False)


def git_commit(root: Path) -> str:
    """The short commit of a checkout (and ``+changes`` if its tree differs), for headers."""
    done = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty=+changes"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def command_line() -> str:
    """The command this script was started with, as one could type it again."""
    return " ".join(shlex.quote(part) for part in [Path(sys.executable).name, *sys.argv])


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in (0, 1]) of a non-empty sample."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def run_cli(repo: Path, *args: str, cwd: Path) -> str:
    """Run one CLI command of the checkout at ``repo``; its stdout, or raise with its stderr."""
    result = subprocess.run([*cli_command(repo), *args], capture_output=True, text=True,
                            cwd=cwd, env=cli_env(repo), timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {result.returncode}: "
                           f"{result.stderr.strip()[-500:]}")
    return result.stdout


def start_cli(repo: Path, *args: str, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start one long-running CLI command (a worker) of ``repo``, output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen([*cli_command(repo), *args], stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd, env=cli_env(repo))


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    """SIGTERM (a worker's graceful stop), then SIGKILL after ``timeout_s``; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
