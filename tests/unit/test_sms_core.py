"""The core of the SMS model (issue 14): config validation, the policy functions both
clocks and the planner share, per-message segment counts and the report's lines."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_sim import SenderConfig, SimulationConfig
from sms_sim.config import (
    SENDER_TYPE_RATES_PER_S,
    Content,
    DeliveryGoal,
    ReceiptModel,
    SenderType,
)
from sms_sim.errors import ConfigError
from sms_sim.generate import generate_messages, segment_counts
from sms_sim.model import ErrorClass, ReceiptStatus
from sms_sim.policy import (
    FAILURE_ERRORS,
    error_class_of,
    mean_service_s,
    never_delivered_probability,
    receipt_rng,
    send_classifier,
    send_slot_s,
    sender_rng,
)
from sms_sim.report import Report, StopReason, build_report, format_report, sms_stats
from sms_sim.segments import segments
from sms_sim.stats import SendTally, SmsTally


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"per_segment_s": -1.0}, "per_segment must be >= 0"),
    ({"permanent_rate": 1.5}, "permanent_rate must be in [0, 1]"),
    ({"throttle_rate": math.nan}, "throttle_rate must be a finite number"),
    ({"retry_after_s": 2e9}, "retry_after must be <= 1e+09"),
    ({"permanent_rate": 0.5, "throttle_rate": 0.4},
     "failure_rate + permanent_rate + throttle_rate must be <= 1"),
])
def test_sender_sms_fields_are_validated_with_one_line(kwargs: dict[str, float],
                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("+", r"\+")):
        SenderConfig(0.01, 0.0, 0.2, **kwargs)  # type: ignore[arg-type]


def test_content_and_run_fields_are_validated() -> None:
    with pytest.raises(ConfigError, match="text must be a non-empty string"):
        Content(text="")
    with pytest.raises(ConfigError, match="text must fit in 255 segments"):
        Content(text="ж" * (67 * 255 + 1))
    assert Content(text="ж" * 67 * 255).fixed == segments("ж" * 67 * 255)
    with pytest.raises(ConfigError, match="valid_for must be > 0"):
        SimulationConfig(valid_for_s=0.0)
    with pytest.raises(ConfigError, match="target must be one of accepted, received"):
        DeliveryGoal(deadline_s=1.0, target="sent")  # type: ignore[arg-type]


def test_defaults_leave_the_sms_model_off() -> None:
    assert not SimulationConfig().is_sms
    assert not SenderConfig(0.01, 0.0, 0.2, rate_limit_per_s=1.0).has_sms_fields
    assert SimulationConfig(content=Content()).is_sms
    assert SimulationConfig(valid_for_s=60.0).is_sms
    assert SENDER_TYPE_RATES_PER_S == {SenderType.LONGCODE: 1.0, SenderType.TOLLFREE: 3.0,
                                       SenderType.SHORTCODE: 100.0}


@given(st.floats(0, 1, exclude_max=True), st.floats(0, 0.3), st.floats(0, 0.3),
       st.floats(0, 0.3))
def test_one_draw_is_partitioned_transient_permanent_throttled_accepted(
    draw: float, transient: float, permanent: float, throttled: float
) -> None:
    classify = send_classifier(SenderConfig(0.01, 0.0, transient, permanent_rate=permanent,
                                            throttle_rate=throttled))
    expected: ErrorClass | None
    if draw < transient:
        expected = ErrorClass.TRANSIENT
    elif draw < transient + permanent:
        expected = ErrorClass.PERMANENT
    elif draw < transient + permanent + throttled:
        expected = ErrorClass.THROTTLED
    else:
        expected = None
    assert classify(draw) is expected
    # Without the new classes the outcome is the `draw >= failure_rate` of before.
    assert (send_classifier(SenderConfig(0.01, 0.0, transient))(draw) is None) == (
        draw >= transient)


def test_the_send_slot_covers_segments_send_time_and_a_throttles_pause() -> None:
    sender = SenderConfig(0.1, 0.0, 0.0, rate_limit_per_s=2.0, retry_after_s=3.0)
    assert send_slot_s(sender, 0.1, 3, None) == 1.5
    assert send_slot_s(sender, 2.0, 3, ErrorClass.TRANSIENT) == 2.0
    assert send_slot_s(sender, 0.1, 1, ErrorClass.THROTTLED) == pytest.approx(3.1)
    unlimited = SenderConfig(0.1, 0.0, 0.0)
    assert send_slot_s(unlimited, 0.1, 5, None) == 0.1
    assert mean_service_s(SenderConfig(0.1, 0.0, 0.0, per_segment_s=0.01), 3) == (
        pytest.approx(0.13))


def test_never_delivered_probability_is_exact_for_small_cases() -> None:
    plain = SenderConfig(0.01, 0.0, 0.03)
    assert never_delivered_probability(plain, 3) == 0.03**3  # the p**K of before, exactly
    # Transient 0.1, permanent 0.2, two attempts: fail-fail 0.01, or permanent on the first
    # (0.2) or on the second after a transient (0.1 * 0.2).
    sender = SenderConfig(0.01, 0.0, 0.1, permanent_rate=0.2)
    assert never_delivered_probability(sender, 2) == pytest.approx(0.01 + 0.2 + 0.02)
    receipts = ReceiptModel(undelivered_rate=0.02, lost_rate=0.03)
    assert never_delivered_probability(plain, 1, receipts) == pytest.approx(
        1 - 0.97 * 0.95)


def test_error_texts_map_back_to_their_class() -> None:
    for error_class in ErrorClass:
        assert error_class_of(FAILURE_ERRORS[error_class]) is error_class
    assert error_class_of("connection reset") is ErrorClass.TRANSIENT


def test_segment_counts_follow_the_content_spec() -> None:
    assert list(segment_counts(None, 3, 1)) == [1, 1, 1]
    assert list(segment_counts(Content(text="ж" * 200), 2, 1)) == [3, 3]
    own = list(segment_counts(Content(), 2_000, 7))
    assert own == [segments(m.text).count for m in generate_messages(2_000, 7)]
    assert set(own) == {1, 2}  # the generator's texts span one to two segments


def _report(sms_on: bool) -> Report:
    tally = SmsTally(segments_sent=30, segments_attempted=33, expired=2)
    tally.failures[ErrorClass.PERMANENT] = 1
    tally.receipts[ReceiptStatus.DELIVERED] = 9
    tally.receipts[ReceiptStatus.UNKNOWN] = 1
    return build_report(produced=13, per_sender=[SendTally(sent=10, failed=1,
                                                           total_send_s=1.1)],
                        unsent=0, elapsed_s=11.0, seed=1, stopped_by=StopReason.COMPLETED,
                        expired=2 if sms_on else 0,
                        sms=sms_stats(tally, True, (1.0, 2.0, 3.0)) if sms_on else None)


def test_the_report_shows_segments_classes_expiry_and_receipts_only_when_on() -> None:
    text = format_report(_report(True))
    assert "+ expired 2: ok" in text
    assert "segments: 30 sent (3.00 per message sent), 33 attempted, 3.0 seg/s" in text
    assert "transient 0, permanent 1, throttled 0; expired before sending 2" in text
    assert ("receipts: delivered 9, undelivered 0, expired 0, unknown 1; time to delivered "
            "p50 1.000s p95 2.000s p99 3.000s") in text
    as_dict = _report(True).to_dict()
    assert as_dict["expired"] == 2 and isinstance(as_dict["sms"], dict)
    plain = _report(False)
    assert "segments" not in format_report(plain) and "sms" not in plain.to_dict()
    assert not plain.is_accounted  # 13 produced, 10 sent + 1 failed: the 2 expired matter


def test_receipt_streams_are_independent_of_the_send_streams() -> None:
    assert receipt_rng(1, 0).random() != sender_rng(1, 0).random()
    assert receipt_rng(1, 0).random() == random.Random("sms_sim:1:receipts:0").random()
