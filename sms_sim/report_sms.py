"""The SMS model's part of the run report (issue 14): segments beside messages, failed
attempts per error class, and delivery receipts with the time to delivered. Kept apart
from ``report`` so that the report of the default model reads as it did; ``report``
includes these when the SMS model was on.
"""

from __future__ import annotations

from dataclasses import dataclass

from sms_sim.model import ErrorClass, ReceiptStatus
from sms_sim.stats import SmsTally

__all__ = ["SmsStats", "sms_stats", "sms_dict", "format_sms_lines", "per_s"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SmsStats:
    """The SMS model's part of a report (issue 14), present when any of it was on.

    ``segments_sent`` are the segments of accepted sends (``segments_attempted`` adds the
    failed attempts'); ``transient``, ``permanent`` and ``throttled`` count failed attempts
    per class; receipts (None when off) count accepted sends by what their receipt said:
    ``expired`` when it would have come after the message's validity, ``unknown`` when it
    never came. The time-to-delivered percentiles run from arrival to the delivered receipt,
    exact nearest-rank order statistics in both modes (None without delivered receipts).
    """

    segments_sent: int
    segments_attempted: int
    transient: int
    permanent: int
    throttled: int
    receipts: dict[ReceiptStatus, int] | None = None
    p50_delivered_s: float | None = None
    p95_delivered_s: float | None = None
    p99_delivered_s: float | None = None


def sms_stats(
    tally: SmsTally, receipts_on: bool,
    percentiles: tuple[float | None, float | None, float | None] = (None, None, None),
) -> SmsStats:
    """The report's ``SmsStats`` from a run's ``SmsTally`` and its delivered percentiles."""
    p50, p95, p99 = percentiles
    return SmsStats(
        segments_sent=tally.segments_sent,
        segments_attempted=tally.segments_attempted,
        transient=tally.failures[ErrorClass.TRANSIENT],
        permanent=tally.failures[ErrorClass.PERMANENT],
        throttled=tally.failures[ErrorClass.THROTTLED],
        receipts=dict(tally.receipts) if receipts_on else None,
        p50_delivered_s=p50, p95_delivered_s=p95, p99_delivered_s=p99,
    )


def sms_dict(stats: SmsStats, elapsed_s: float) -> dict[str, object]:
    return {
        "segments_sent": stats.segments_sent,
        "segments_attempted": stats.segments_attempted,
        "segments_per_s": per_s(stats.segments_attempted, elapsed_s),
        "failed_attempts_by_class": {"transient": stats.transient,
                                     "permanent": stats.permanent,
                                     "throttled": stats.throttled},
        "receipts": (None if stats.receipts is None
                     else {str(status): count for status, count in stats.receipts.items()}),
        "time_to_delivered_ms": {
            "p50": _ms(stats.p50_delivered_s),
            "p95": _ms(stats.p95_delivered_s),
            "p99": _ms(stats.p99_delivered_s),
        },
    }


def per_s(count: int, elapsed_s: float) -> float:
    """A count per second of ``elapsed_s``; 0.0 before any time has passed."""
    return count / elapsed_s if elapsed_s > 0 else 0.0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}s"


def format_sms_lines(stats: SmsStats, *, sent: int, expired: int,
                     elapsed_s: float) -> list[str]:
    """The SMS model's lines of the report: segments beside messages, failures by class,
    expiry, and receipts with the time to delivered."""
    per_message = stats.segments_sent / sent if sent else 0.0
    lines = [
        f"segments: {stats.segments_sent} sent ({per_message:.2f} per message sent), "
        f"{stats.segments_attempted} attempted, "
        f"{per_s(stats.segments_attempted, elapsed_s):.1f} seg/s",
        f"failed attempts by class: transient {stats.transient}, permanent "
        f"{stats.permanent}, throttled {stats.throttled}; expired before sending "
        f"{expired}",
    ]
    if stats.receipts is not None:
        r = stats.receipts
        lines.append(
            f"receipts: delivered {r[ReceiptStatus.DELIVERED]}, undelivered "
            f"{r[ReceiptStatus.UNDELIVERED]}, expired {r[ReceiptStatus.EXPIRED]}, unknown "
            f"{r[ReceiptStatus.UNKNOWN]}; time to delivered p50 "
            f"{_seconds(stats.p50_delivered_s)} p95 {_seconds(stats.p95_delivered_s)} "
            f"p99 {_seconds(stats.p99_delivered_s)}"
        )
    return lines
