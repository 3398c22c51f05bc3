"""The run report shared by every mode, and the text forms of it (progress line, final report).

Formatting is pure so it can be tested without threads and reused by the virtual-time mode.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from sms_sim.report_sms import SmsStats, format_sms_lines, per_s, sms_dict, sms_stats
from sms_sim.stats import SendTally

__all__ = [
    "Report",
    "build_report",
    "SenderReport",
    "VirtualStats",
    "StopReason",
    "Progress",
    "format_progress",
    "format_report",
    "format_sender_lines",
    "format_warnings",
    "sender_reports",
    "LAG_WARNING_S",
    "SENDER_LINES_MAX",
    "SmsStats",
    "sms_stats",
    "format_sms_lines",
]

# Senders running this far behind their own schedule mean the host cannot keep real time.
LAG_WARNING_S = 0.1
# Above this many senders the text report summarises them instead of one line each.
SENDER_LINES_MAX = 16


class StopReason(enum.StrEnum):
    """Why a run ended."""

    COMPLETED = "completed"  # every message was produced and sent or failed
    DURATION = "duration"  # the configured time limit passed
    SIGNAL = "signal"  # the caller asked to stop (Ctrl-C, SIGTERM)
    ERROR = "error"  # a worker thread raised; see the log
    OUTPUT_CLOSED = "output_closed"  # the progress stream went away (e.g. piped into head)


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderReport:
    """One sender's share of the work."""

    index: int
    sent: int
    failed: int
    avg_send_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualStats:
    """What only a simulated clock can measure exactly (virtual-time mode).

    Times are simulated seconds except ``wall_s``. Time to send runs from a message's
    arrival to its successful completion; the percentiles are exact nearest-rank order
    statistics of the sends made, None when there were none.
    ``mean_in_system`` is the time-average number of messages present (queued, sending or
    waiting to retry), integrated over the run independently of the per-message times, so
    Little's law ``mean_in_system == arrival_rate_per_s * mean_time_in_system_s`` is a check.
    """

    wall_s: float
    makespan_s: float
    p50_send_s: float | None
    p95_send_s: float | None
    p99_send_s: float | None
    utilisation: float
    attempts: int
    failed_attempts: int
    mean_wait_s: float
    waited_fraction: float
    mean_in_system: float
    mean_time_in_system_s: float
    arrival_rate_per_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Totals at the end of a run.

    ``unsent`` counts messages produced but never completed: still queued, waiting for a
    retry, or taken by a sender and abandoned at a stop. ``dead_lettered`` counts messages
    whose every allowed attempt failed when retries are on (with one attempt allowed, such a
    message is ``failed``). ``is_accounted`` checks ``produced == sent + failed + unsent +
    dead_lettered`` from counts kept independently.
    ``throughput_per_s`` is attempts (sent + failed) per second of ``elapsed_s``.
    ``max_lag_s`` is how far the slowest sender fell behind its own schedule: above
    ``LAG_WARNING_S`` the host could not keep real time. ``expired`` counts messages whose
    validity ended before they could be sent (never sent late); ``sms`` holds the SMS
    model's counts, None when it was off.
    """

    produced: int
    sent: int
    failed: int
    unsent: int
    elapsed_s: float
    avg_send_s: float
    throughput_per_s: float
    senders: tuple[SenderReport, ...]
    seed: int
    stopped_by: StopReason
    max_lag_s: float = 0.0
    threads_alive: tuple[str, ...] = field(default=())
    dead_lettered: int = 0
    virtual: VirtualStats | None = None
    expired: int = 0
    sms: SmsStats | None = None

    @property
    def is_accounted(self) -> bool:
        return self.produced == (self.sent + self.failed + self.unsent + self.dead_lettered
                                 + self.expired)

    def to_dict(self) -> dict[str, object]:
        """The JSON form: times in the units their keys name."""
        return {
            "produced": self.produced,
            "sent": self.sent,
            "failed": self.failed,
            "unsent": self.unsent,
            "dead_lettered": self.dead_lettered,
            "accounted": self.is_accounted,
            "elapsed_s": self.elapsed_s,
            "avg_send_ms": self.avg_send_s * 1000,
            "throughput_per_s": self.throughput_per_s,
            "max_lag_s": self.max_lag_s,
            "seed": self.seed,
            "stopped_by": str(self.stopped_by),
            "threads_alive": list(self.threads_alive),
            "senders": [
                {
                    "index": s.index,
                    "sent": s.sent,
                    "failed": s.failed,
                    "avg_send_ms": s.avg_send_s * 1000,
                }
                for s in self.senders
            ],
            **({} if self.virtual is None else _virtual_dict(self.virtual)),
            **({} if self.sms is None else {"expired": self.expired,
                                            "sms": sms_dict(self.sms, self.elapsed_s)}),
        }


def build_report(
    *,
    produced: int,
    per_sender: Sequence[SendTally],
    unsent: int,
    elapsed_s: float,
    seed: int,
    stopped_by: StopReason,
    failed: int | None = None,
    dead_lettered: int = 0,
    max_lag_s: float = 0.0,
    threads_alive: Sequence[str] = (),
    virtual: VirtualStats | None = None,
    expired: int = 0,
    sms: SmsStats | None = None,
) -> Report:
    """The one place a ``Report`` is assembled from per-sender tallies, in every mode.

    Totals, the mean send time and throughput (attempts per second of ``elapsed_s``) are
    derived here from the tallies. ``failed`` counts messages that failed for good with a
    single attempt allowed; it defaults to the failed attempts, which is the same thing
    when there are no retries.
    """
    sent = sum(t.sent for t in per_sender)
    failed_attempts = sum(t.failed for t in per_sender)
    attempts = sent + failed_attempts
    busy_s = sum(t.total_send_s for t in per_sender)
    return Report(
        produced=produced,
        sent=sent,
        failed=failed_attempts if failed is None else failed,
        unsent=unsent,
        dead_lettered=dead_lettered,
        elapsed_s=elapsed_s,
        avg_send_s=busy_s / attempts if attempts else 0.0,
        throughput_per_s=attempts / elapsed_s if elapsed_s > 0 else 0.0,
        senders=sender_reports(per_sender),
        seed=seed,
        stopped_by=stopped_by,
        max_lag_s=max_lag_s,
        threads_alive=tuple(threads_alive),
        virtual=virtual,
        expired=expired,
        sms=sms,
    )


def _virtual_dict(stats: VirtualStats) -> dict[str, object]:
    return {
        "mode": "virtual",
        "makespan_s": stats.makespan_s,
        "wall_s": stats.wall_s,
        "time_to_send_ms": {
            "p50": _ms(stats.p50_send_s),
            "p95": _ms(stats.p95_send_s),
            "p99": _ms(stats.p99_send_s),
        },
        "utilisation": stats.utilisation,
        "attempts": stats.attempts,
        "failed_attempts": stats.failed_attempts,
        "mean_wait_ms": stats.mean_wait_s * 1000,
        "waited_fraction": stats.waited_fraction,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}s"


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """What one progress line shows."""

    elapsed_s: float
    sent: int
    failed: int
    avg_send_s: float
    queued: int
    lag_s: float
    simulated: bool = False
    segments: int | None = None  # segments attempted so far, with the SMS model on

    @property
    def throughput_per_s(self) -> float:
        attempts = self.sent + self.failed
        return attempts / self.elapsed_s if self.elapsed_s > 0 else 0.0


def format_progress(progress: Progress) -> str:
    """One line, no newline: elapsed, sent, failed, avg send time, throughput, queued."""
    stamp = "sim " if progress.simulated else ""
    line = (
        f"[{stamp}{progress.elapsed_s:8.1f}s] sent {progress.sent}  failed {progress.failed}  "
        f"avg {progress.avg_send_s * 1000:.2f} ms/msg  {progress.throughput_per_s:.1f} msg/s  "
        f"queued {progress.queued}"
    )
    if progress.segments is not None:
        line += (f"  segments {progress.segments} "
                 f"({per_s(progress.segments, progress.elapsed_s):.1f} seg/s)")
    if progress.lag_s > LAG_WARNING_S:
        line += f"  LAGGING real time by {progress.lag_s:.2f}s (host slower than the senders)"
    return line


def format_report(report: Report) -> str:
    """The multi-line final report, ending in a newline."""
    verdict = "ok" if report.is_accounted else "MISMATCH"
    dead = f" + dead-lettered {report.dead_lettered}" if report.dead_lettered else ""
    if report.sms is not None:
        dead += f" + expired {report.expired}"
    simulated = " simulated" if report.virtual is not None else ""
    lines = [
        f"{report.stopped_by}: {report.produced} produced, {report.sent} sent, "
        f"{report.failed} failed, {report.unsent} unsent, {report.dead_lettered} dead-lettered "
        f"in {report.elapsed_s:.3f}s{simulated} (seed {report.seed})",
        f"accounting: produced {report.produced} = sent {report.sent} + failed {report.failed} "
        f"+ unsent {report.unsent}{dead}: {verdict}",
        f"avg send {report.avg_send_s * 1000:.3f} ms/msg, "
        f"throughput {report.throughput_per_s:.1f} msg/s",
    ]
    lines.extend(format_warnings(report.max_lag_s, report.threads_alive))
    if report.virtual is not None:
        v = report.virtual
        lines.append(
            f"virtual time: makespan {v.makespan_s:.3f}s, time to send p50 "
            f"{_seconds(v.p50_send_s)} p95 {_seconds(v.p95_send_s)} "
            f"p99 {_seconds(v.p99_send_s)}, "
            f"utilisation {v.utilisation:.1%}, {v.attempts} attempts "
            f"({v.failed_attempts} failed)"
        )
    if report.sms is not None:
        lines.extend(format_sms_lines(report.sms, sent=report.sent, expired=report.expired,
                                      elapsed_s=report.elapsed_s))
    lines.extend(format_sender_lines(report.senders))
    return "\n".join(lines) + "\n"


def sender_reports(tallies: Sequence[SendTally]) -> tuple[SenderReport, ...]:
    """One ``SenderReport`` per sender tally, indexed in order."""
    return tuple(
        SenderReport(index=i, sent=t.sent, failed=t.failed, avg_send_s=t.avg_send_s)
        for i, t in enumerate(tallies)
    )


def format_warnings(max_lag_s: float, threads_alive: Sequence[str]) -> list[str]:
    """The report's warning lines: a host that could not keep real time, threads left alive."""
    lines = []
    if max_lag_s > LAG_WARNING_S:
        lines.append(
            f"WARNING: senders fell up to {max_lag_s:.2f}s behind schedule; this host "
            "could not keep real time, so the run was slower than the configured senders"
        )
    if threads_alive:
        lines.append(f"WARNING: threads still running at exit: {', '.join(threads_alive)}")
    return lines


def format_sender_lines(senders: Sequence[SenderReport]) -> list[str]:
    """One line per sender, or a one-line summary above ``SENDER_LINES_MAX`` of them."""
    if len(senders) <= SENDER_LINES_MAX:
        return [
            f"  sender-{s.index}: sent {s.sent}, failed {s.failed}, "
            f"avg {s.avg_send_s * 1000:.3f} ms/msg"
            for s in senders
        ]
    attempts = sorted(s.sent + s.failed for s in senders)
    return [
        f"  {len(senders)} senders: attempts per sender min {attempts[0]}, "
        f"median {attempts[len(attempts) // 2]}, max {attempts[-1]} (--json lists each)"
    ]
