"""The ``worker`` command: one durable worker process on an SQLite file or PostgreSQL.

Only this module installs signal handlers for the worker (through ``SignalRecorder``, on
the main thread, restored in ``finally``): the first SIGINT/SIGTERM stops claiming and lets
sends in flight finish, a second interrupts them.

Sends go to a simulated provider (in memory, or the ``--ledger`` file shared by processes)
or, with ``--provider URL --provider-token-file F``, to a real one over HTTP
(``dispatch.http_provider``). The token is read here, once, and never printed or logged.

The simulated provider speaks the SMS model of the simulator (issue 14) with the same
flags (``model_args``): rate limits and ``--sender-type`` in segments per second,
``--per-segment``, the error classes, and ``--receipts`` with the receipt model. What only
a simulation can have (its send times per segment, its failures, its receipts) is refused
with ``--provider``; rate limits are not: they pace the sends to a real provider too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from sms_sim.cli.common import (
    ExitCode,
    SignalRecorder,
    configure_logging,
    emit,
    exit_code,
    int_at_least,
    json_text,
    non_negative_float,
    positive_float,
    probability,
)
from sms_sim.cli.model_args import (
    SENDER_OPTIONS,
    add_carrier_arguments,
    add_error_class_arguments,
    add_receipt_arguments,
    add_sender_model_arguments,
    in_option_words,
    receipt_flags_given,
    receipts_from_args,
    sender_count,
    sender_from_args,
    sender_spec,
)
from sms_sim.cli.store_command import Access, base_parser, open_for
from sms_sim.clock import RealClock
from sms_sim.config import RetryPolicy, SenderConfig, check_sender_total
from sms_sim.dispatch.contract import DispatchStore
from sms_sim.dispatch.errors import StoreDamagedError
from sms_sim.dispatch.service import DispatchService
from sms_sim.dispatch.dispatcher import DEFAULT_RETRY, DispatchConfig
from sms_sim.dispatch.http_provider import (
    DEFAULT_TIMEOUT_S,
    HttpProvider,
    ProviderEndpoint,
    check_provider_url,
    read_token,
)
from sms_sim.dispatch.ledger import LedgerProvider
from sms_sim.dispatch.stores import display_url
from sms_sim.dispatch.transport import MemoryProvider, Transport
from sms_sim.dispatch.wake import WOKEN_IDLE_RECHECK_S, idle_recheck_for
from sms_sim.dispatch.worker import Worker, WorkerReport, check_lease
from sms_sim.errors import ConfigError, SmsSimError
from sms_sim.generate import new_seed
from sms_sim.sim.threaded.limits import ThreadStartError, threaded_senders_max

__all__ = ["main", "report_dict"]

# An idle worker's longest wait over a store that cannot wake it (SQLite, or PostgreSQL
# behind transaction pooling): another process's submit is found within this long.
POLLING_IDLE_RECHECK_S = DispatchConfig().idle_recheck_s

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _collecting_less() -> Iterator[None]:
    """The cycle collector tuned for the dispatch loop while it runs (process-wide, so
    here rather than in ``Worker``, and put back after: tests run this command in their
    own process).

    A worker allocates in bursts (a claim's thousand claims, jobs and slots, alive until
    sent) and frees by reference count; at the default first threshold (700) the collector
    ran about 1,000 times, older generations included, in a 150,000-delivery drain: 1.4 s
    of one worker's CPU, 9 us a delivery (``gc.callbacks``, a 300,000-recipient drain by
    two workers). What the start-up made (modules, the open store) is never garbage, so it
    is frozen out of every collection, and collections come every 10,000 net allocations:
    7 collections, 0.03 s, in the same drain."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(10_000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def main(argv: Sequence[str], *, prog: str) -> int:
    """The ``worker`` command: parse, wire a ``Worker`` to the store, run, exit code."""
    parser = base_parser(prog, "Dispatch due deliveries until SIGINT/SIGTERM: claim batches "
                               "under a lease, send through the sender pool to a simulated "
                               "provider or (--provider) a real one, retry by error class: "
                               "permanent dead at once, transient with backoff, throttled "
                               "after its Retry-After. Several workers may share one database.")
    parser.epilog = ("exit codes: 0 idle exit (--exit-when-idle), 1 store error (a missing "
                     "database included: see init), 2 bad usage, 3 threads did not stop, "
                     "130 SIGINT, 141 output closed, 143 SIGTERM")
    parser.add_argument("--senders", type=sender_count, default=4,
                        help="identical sender threads (default 4)")
    parser.add_argument("--mean", type=non_negative_float, metavar="SECONDS",
                        help="simulated send time before each send (default 0.01; not with "
                             "--provider)")
    parser.add_argument("--deviation", type=non_negative_float, metavar="SECONDS",
                        help="send time is uniform in mean +/- this (default 0.001, 0 for "
                             "--distribution constant or exponential; not with --provider)")
    parser.add_argument("--failure-rate", type=probability, default=0.0, metavar="P",
                        help="probability a simulated send fails and is retried (default 0; "
                             "not with --provider)")
    parser.add_argument("--sender", action="append", type=sender_spec, default=[],
                        metavar="MEAN,DEV,RATE", help="add one sender with its own settings")
    parser.add_argument("--batch", type=int_at_least(1), default=100,
                        help="deliveries per claim (default 100)")
    parser.add_argument("--lease", type=positive_float, default=30.0, metavar="SECONDS",
                        help="claim lease; expired leases are reclaimed by others (default 30)")
    parser.add_argument("--max-attempts", type=int_at_least(1),
                        default=DEFAULT_RETRY.max_attempts,
                        help="reported attempts before dead (default 5)")
    parser.add_argument("--max-lease-losses", type=int_at_least(0), default=5,
                        metavar="N", help="leases that may run out unreported (a worker died "
                        "or stalled) before the delivery is dead (default 5)")
    parser.add_argument("--retry-base", type=non_negative_float, default=DEFAULT_RETRY.base_s,
                        metavar="SECONDS", help="first retry delay before jitter (default 1)")
    parser.add_argument("--retry-factor", type=positive_float, default=DEFAULT_RETRY.factor,
                        help="backoff growth per retry (default 2)")
    parser.add_argument("--retry-cap", type=non_negative_float, default=DEFAULT_RETRY.cap_s,
                        metavar="SECONDS", help="longest retry delay (default 300)")
    parser.add_argument("--idle-recheck", type=positive_float, metavar="SECONDS",
                        help="longest idle wait before looking for new work (default "
                             f"{POLLING_IDLE_RECHECK_S:g}; {WOKEN_IDLE_RECHECK_S:g} on "
                             "PostgreSQL, which wakes idle workers on submit)")
    parser.add_argument("--fallback-poll", type=positive_float, default=1.0,
                        metavar="SECONDS", help="PostgreSQL: the longest idle wait while the "
                        "wake-up connection (LISTEN) is lost or not yet made (default 1)")
    parser.add_argument("--ledger", type=Path, metavar="PATH",
                        help="simulated provider's ledger file shared by workers (default: "
                             "in memory)")
    parser.add_argument("--provider", type=provider_url, metavar="URL",
                        help="send through a real provider: POST each send as JSON to this "
                             "https URL (http only to 127.0.0.1/localhost); each sender is "
                             "one connection")
    parser.add_argument("--provider-token-file", type=Path, metavar="PATH",
                        help="file holding the provider's bearer token (required with "
                             "--provider; never printed)")
    parser.add_argument("--provider-timeout", type=positive_float, default=DEFAULT_TIMEOUT_S,
                        metavar="SECONDS", help="longest wait for each step of a provider "
                        f"request: connect, send, each read (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--interval", type=positive_float, default=1.0, metavar="SECONDS",
                        help="seconds between progress lines (default 1)")
    parser.add_argument("--seed", type=int_at_least(0), metavar="N",
                        help="seed for simulated send outcomes and retry jitter (default: random)")
    parser.add_argument("--exit-when-idle", action="store_true",
                        help="exit 0 once nothing is scheduled, pending, leased or retrying")
    parser.add_argument("--wait-for-receipts", action="store_true",
                        help="with --exit-when-idle and simulated receipts: exit only once "
                             "every receipt drawn is recorded (the lognormal tail can take "
                             "minutes)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    parser.add_argument("--json", action="store_true",
                        help="print the final report as one JSON object on stdout; the "
                             "first line, progress and the text report go to stderr")
    parser.add_argument("--unsafe-no-fencing", action="store_true", help=argparse.SUPPRESS)
    sms = parser.add_argument_group(
        "SMS model (rate limits pace a real provider too; the rest is the simulated one's)")
    add_sender_model_arguments(sms)
    add_carrier_arguments(sms)
    add_error_class_arguments(sms)
    add_receipt_arguments(sms)
    args = parser.parse_args(argv)
    try:
        endpoint = provider_endpoint(args)
        simulated = endpoint is None
        mean, deviation = _send_time(args, simulated)
        # Validated even for --senders 0 so that a typo in --mean is never silently ignored.
        identical = sender_from_args(args, mean, deviation, args.failure_rate)
        receipts = receipts_from_args(args)
        if args.wait_for_receipts and (receipts is None or not args.exit_when_idle):
            raise ConfigError("--wait-for-receipts needs --exit-when-idle and --receipts "
                              "(or a receipt model flag)")
        # One thread per sender: the host's cap, checked before the list is built.
        check_sender_total(args.senders + len(args.sender), maximum=threaded_senders_max())
        senders = [identical] * args.senders + list(args.sender)
        if not senders:
            raise ConfigError("senders must be >= 1 (got 0)")
        if not simulated:
            refuse_simulated_only(args, senders)
        retry = RetryPolicy(max_attempts=args.max_attempts, base_s=args.retry_base,
                            factor=args.retry_factor, cap_s=args.retry_cap)
        check_lease(args.lease, senders,
                    None if args.provider is None else args.provider_timeout)
        config = DispatchConfig(batch_size=args.batch, lease_s=args.lease,
                                idle_recheck_s=args.idle_recheck or POLLING_IDLE_RECHECK_S,
                                fallback_poll_s=args.fallback_poll, retry=retry,
                                max_lease_losses=args.max_lease_losses,
                                fencing=not args.unsafe_no_fencing)
    except ConfigError as exc:
        parser.error(in_option_words(str(exc), SENDER_OPTIONS))
    configure_logging(args.verbose)
    seed = new_seed() if args.seed is None else args.seed
    signals = SignalRecorder()
    store: DispatchStore | None = None
    ledger: LedgerProvider | None = None
    http: HttpProvider | None = None
    text_output = sys.stderr if args.json else sys.stdout
    try:
        # Never creates a database: a mistyped --db must fail, not idle on an empty file
        # while the real messages wait (issue 11, item 5).
        store = open_for(args.db, Access.WRITE)
        config = _idle_default(config, args.idle_recheck, store)
        # SQLite finds damage only in the pages a statement reads: a long-running worker
        # checks every page once as it starts (``quick_check``: 0.9 s for a 125 MB file
        # of 1,000,000 deliveries) rather than dispatching from a damaged file.
        verdict = DispatchService(store, RealClock()).check(quick=True)
        if verdict != "ok":
            lines = verdict.splitlines()  # "*** in database main ***" heads the details
            problem = next((line for line in lines if not line.startswith("***")), lines[0])
            raise StoreDamagedError(f"database {display_url(args.db)!r} is damaged ({problem}); "
                                    "run 'check' on it and restore it from a backup")
        transport: Transport = MemoryProvider()
        to = ""
        if endpoint is not None:
            http = HttpProvider(endpoint, clock=RealClock())
            transport = http
            to = f" to {_shown(endpoint.url)}"
        elif args.ledger is not None:
            ledger = LedgerProvider(args.ledger, clock=RealClock(),
                                    dedup=not args.unsafe_no_fencing)
            transport = ledger
        worker = Worker(store, transport, senders=senders, clock=RealClock(), seed=seed,
                        config=config, output=text_output, interval_s=args.interval,
                        show_progress=not args.quiet, exit_when_idle=args.exit_when_idle,
                        receipts=receipts, wait_for_receipts=args.wait_for_receipts)
        first = (f"{worker.owner}: dispatching from {display_url(args.db)}{to} with "
                 f"{len(senders)} senders, batch {config.batch_size}, "
                 f"lease {config.lease_s:g}s (seed {seed})")
        if args.json:
            print(first, file=sys.stderr, flush=True)
        else:
            emit(first)
        signals.install()
        with _collecting_less():
            report = worker.run(stop_requests=lambda: signals.count)
    except ThreadStartError as exc:  # the host refused a sender thread: ask for fewer
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except SmsSimError as exc:
        log.debug("worker failed", exc_info=True)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    finally:
        signals.restore()
        if ledger is not None:
            ledger.close()
        if http is not None:
            http.close()
        if store is not None:
            store.close()
    code = exit_code(report.stopped_by, report.threads_alive, signals)
    if args.json and code != ExitCode.SIGPIPE:
        emit(json_text(report_dict(report)))
    return code


def _idle_default(config: DispatchConfig, asked: float | None,
                  store: DispatchStore) -> DispatchConfig:
    """``config`` with the idle wait ``--idle-recheck`` asked for, or the store's default
    (``wake.idle_recheck_for``: long where the store wakes its workers)."""
    if asked is not None:
        return config
    return dataclasses.replace(config,
                               idle_recheck_s=idle_recheck_for(store, POLLING_IDLE_RECHECK_S))


def _send_time(args: argparse.Namespace, simulated: bool) -> tuple[float, float]:
    """The identical senders' mean and deviation: the flags', or the defaults (none with a
    real provider, whose sends take their own time)."""
    if not simulated:
        refuse_simulated_send_time(args)
        return 0.0, 0.0
    # No default spread for a distribution that takes none: "--distribution exponential"
    # alone was refused for the default deviation it did not ask for.
    spread = 0.001 if args.distribution in ("uniform", "lognormal") else 0.0
    return (0.01 if args.mean is None else args.mean,
            spread if args.deviation is None else args.deviation)


_SEND_TIME = "{flag} simulates the send time; with --provider a send takes as long as the " \
             "provider does"


def refuse_simulated_send_time(args: argparse.Namespace) -> None:
    """With ``--provider``: ``ConfigError`` for a simulated send time asked for, checked
    before it is (a deviation above the provider's zero mean is no "deviation > mean"),
    which would be slept before every real send (5 s each with ``--mean 5``)."""
    for flag, given in (("--mean", args.mean is not None),
                        ("--deviation", args.deviation is not None),
                        ("--distribution", args.distribution != "uniform")):
        if given:
            raise ConfigError(_SEND_TIME.format(flag=flag))


def refuse_simulated_only(args: argparse.Namespace, senders: Sequence[SenderConfig]) -> None:
    """With ``--provider``: raise ``ConfigError`` naming the first flag that only the
    simulated provider has: its failures (``--failure-rate`` or a ``--sender``'s RATE, the
    error classes), its send time (``--mean``, ``--deviation``, ``--distribution``, a
    ``--sender``'s MEAN, per segment), its receipts (a real provider posts its own
    to ``POST /v1/provider/receipts``)."""
    if any(s.failure_rate for s in senders):
        raise ConfigError("--failure-rate (or a --sender's RATE) simulates failures; "
                          "with --provider the provider's answers decide")
    if any(s.mean_s or s.deviation_s for s in senders):
        raise ConfigError(_SEND_TIME.format(flag="a --sender's MEAN"))
    for flag, given in (("--permanent-rate", args.permanent_rate),
                        ("--throttle-rate", args.throttle_rate),
                        ("--retry-after", args.retry_after is not None)):
        if given:
            raise ConfigError(f"{flag} simulates the provider's answers; with --provider "
                              "the provider's answers decide")
    if args.per_segment is not None:
        raise ConfigError("--per-segment simulates the provider's send time; not with "
                          "--provider")
    receipt_flags = receipt_flags_given(args)
    if receipt_flags:
        raise ConfigError(f"{receipt_flags[0]} draws simulated receipts; with --provider the "
                          "provider posts its own to POST /v1/provider/receipts")


def provider_url(text: str) -> str:
    """The ``--provider`` argument type (``http_provider.check_provider_url``)."""
    try:
        check_provider_url(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def provider_endpoint(args: argparse.Namespace) -> ProviderEndpoint | None:
    """The real provider the options name, its token read from its file, or None for the
    simulated one. Raises ``ConfigError`` for a half-given pair, a token file that cannot be
    read or is empty, and ``--ledger`` beside ``--provider`` (the real provider keeps its
    own); the message names the file, never the token."""
    if args.provider is None:
        if args.provider_token_file is not None:
            raise ConfigError("--provider-token-file needs --provider")
        return None
    if args.provider_token_file is None:
        raise ConfigError("--provider needs --provider-token-file")
    if args.ledger is not None:
        raise ConfigError("--ledger is the simulated provider's; not with --provider")
    return ProviderEndpoint(url=args.provider, token=read_token(args.provider_token_file),
                            timeout_s=args.provider_timeout)


def _shown(url: str) -> str:
    """The URL as printed: scheme, host, port and path; never its query."""
    parts = check_provider_url(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def report_dict(report: WorkerReport) -> dict[str, object]:
    """The JSON form of the worker's final report: the text report's figures, times in the
    units their keys name."""
    return {
        "owner": report.owner, "seed": report.seed, "stopped_by": str(report.stopped_by),
        "elapsed_s": report.elapsed_s, "claimed": report.claimed, "claims": report.claims,
        "sent": report.sent, "retried": report.retried, "dead": report.dead,
        "released": report.released, "expired": report.expired, "refused": report.refused,
        "accounted": report.is_accounted, "avg_send_ms": report.avg_send_s * 1000,
        "max_lag_s": report.max_lag_s, "threads_alive": list(report.threads_alive),
        "throttles": report.throttles, "segments_sent": report.segments_sent,
        "receipts": None if report.receipts is None else {
            "delivered": report.receipts.delivered,
            "undelivered": report.receipts.undelivered,
            "expired": report.receipts.expired, "unknown": report.receipts.unknown,
            "outstanding": report.receipts.outstanding,
            "not_applied": report.receipts.not_applied},
        "senders": [{"index": s.index, "sent": s.sent, "failed": s.failed,
                     "avg_send_ms": s.avg_send_s * 1000} for s in report.senders],
    }
