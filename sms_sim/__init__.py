"""sms_sim: simulate mass SMS dispatch on real threads or a virtual clock, plan capacity, and
run durable dispatch.

Standard library only: importing this package never imports an optional extra.

    >>> import sms_sim
    >>> config = sms_sim.SimulationConfig(num_messages=100, senders=[sms_sim.SenderConfig(0, 0, 0.1)] * 2, seed=1)
    >>> report = sms_sim.run(config, output=None)
    >>> report.produced == report.sent + report.failed + report.unsent
    True
"""

from sms_sim.clock import Clock, RealClock, VirtualClock
from sms_sim.config import (
    ArrivalKind,
    Arrivals,
    Jitter,
    RetryPolicy,
    SenderConfig,
    ServiceDistribution,
    SimulationConfig,
)
from sms_sim.errors import ConfigError, InvalidMessageError, SmsSimError
from sms_sim.generate import generate_messages
from sms_sim.model import Message, Outcome
from sms_sim.report import Report, SenderReport, StopReason
from sms_sim.sim.threaded.components import DONE, Producer, Sender
from sms_sim.sim.threaded.monitor import Monitor
from sms_sim.sim.threaded.run import run
from sms_sim.sim.virtual.run import simulate
from sms_sim.version import __version__

__all__ = [
    "ArrivalKind",
    "Arrivals",
    "Clock",
    "ConfigError",
    "DONE",
    "InvalidMessageError",
    "Jitter",
    "Message",
    "Monitor",
    "Outcome",
    "Producer",
    "RealClock",
    "Report",
    "RetryPolicy",
    "Sender",
    "SenderConfig",
    "SenderReport",
    "ServiceDistribution",
    "SimulationConfig",
    "SmsSimError",
    "StopReason",
    "VirtualClock",
    "__version__",
    "generate_messages",
    "run",
    "simulate",
]
