"""The accounting identity as a property over random configs and random stop moments.

Whatever the senders, the queue size, the number of messages and when (or whether) the run
is stopped, ``produced == sent + failed + unsent`` from independently kept counts, a run that
was not stopped produces every message and leaves none unsent, and no message is sent twice.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sms_sim import SenderConfig, SimulationConfig, StopReason, run
from tests.stop_requests import StopAfterPolls

senders = st.builds(
    SenderConfig,
    st.floats(0.0, 0.0005),
    st.just(0.0),
    st.sampled_from([0.0, 0.1, 0.5, 1.0]),
)


@pytest.mark.slow  # the threaded run: real threads
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    num_messages=st.integers(0, 400),
    sender_list=st.lists(senders, min_size=1, max_size=6),
    queue_size=st.integers(1, 64),
    stop_after_polls=st.one_of(st.none(), st.integers(0, 5)),
    second_signal=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_every_message_is_accounted_for(
    num_messages: int,
    sender_list: list[SenderConfig],
    queue_size: int,
    stop_after_polls: int | None,
    second_signal: bool,
    seed: int,
) -> None:
    requests = StopAfterPolls(stop_after_polls, 2 if second_signal else 1)
    config = SimulationConfig(num_messages=num_messages, senders=sender_list,
                              queue_size=queue_size, seed=seed)
    report = run(config, output=None, stop_requests=requests)
    assert report.produced == report.sent + report.failed + report.unsent
    assert report.produced <= num_messages
    assert report.threads_alive == ()
    assert sum(s.sent + s.failed for s in report.senders) == report.sent + report.failed
    if report.stopped_by is StopReason.COMPLETED:
        assert report.produced == num_messages and report.unsent == 0
    else:
        assert report.stopped_by is StopReason.SIGNAL
