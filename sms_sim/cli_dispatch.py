"""The dispatch commands: submit, edit, cancel, show, list, dead, worker.

``cli.main`` hands over ``argv`` after the command name, with ``prog`` ending in that name.
Every bad input is one ``<prog>: error: ...`` line on stderr: argument and validation
errors exit 2 before the database is opened, store refusals (unknown id, stale version,
locked message, unreadable or foreign database) exit 1 and change nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sms_sim.cli_support import (
    ExitCode,
    OneLineParser,
    SignalRecorder,
    int_at_least,
    non_negative_float,
    positive_float,
    probability,
)
from sms_sim.clock import RealClock
from sms_sim.config import RetryPolicy, SenderConfig
from sms_sim.engine.contract import (
    DeliveryStatus,
    InvalidRequestError,
    MessageEdit,
    MessageStatus,
    MessageView,
    NewMessage,
)
from sms_sim.engine.dispatcher import DEFAULT_RETRY, DispatchConfig
from sms_sim.engine.transport import LedgerProvider, MemoryProvider, Transport
from sms_sim.engine.worker import Worker
from sms_sim.errors import ConfigError, SmsSimError
from sms_sim.generate import new_seed
from sms_sim.report import StopReason
from sms_sim.stores.common import format_utc
from sms_sim.stores.sqlite import SqliteStore

__all__ = ["main", "COMMANDS", "parse_time"]

log = logging.getLogger(__name__)

DEFAULT_DB = "sms_sim.db"
COMMANDS = ("submit", "edit", "cancel", "show", "list", "dead", "worker")


def parse_time(text: str) -> float:
    """ISO-8601 to epoch seconds; a time without an offset is taken as UTC."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 time: {text!r} (e.g. 2026-11-23T21:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _numbers(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _read_recipients(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read recipients file {str(path)!r}: {exc}") from exc
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _base_parser(prog: str, description: str) -> OneLineParser:
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH",
                        help=f"database file (default ./{DEFAULT_DB})")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging on stderr")
    return parser


def _add_recipients(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", action="append", type=_numbers, default=[], metavar="NUMBERS",
                        help="recipient numbers xxx-xxx-xxxx, comma-separated (repeatable)")
    parser.add_argument("--recipients-file", type=Path, metavar="FILE",
                        help="one number per line (blank lines and # comments ignored)")


def _recipients(args: argparse.Namespace) -> list[str] | None:
    numbers = [n for group in args.to for n in group]
    if args.recipients_file is not None:
        numbers.extend(_read_recipients(args.recipients_file))
    if not args.to and args.recipients_file is None:
        return None
    return numbers


# --- commands -------------------------------------------------------------------------------


def _submit(prog: str, argv: Sequence[str]) -> int:
    parser = _base_parser(prog, "Queue a message for dispatch to its recipients.")
    parser.add_argument("content", help="the text, 1-1600 characters")
    _add_recipients(parser)
    parser.add_argument("--at", type=parse_time, metavar="TIME",
                        help="ISO-8601 time to send at (default now; no offset means UTC)")
    parser.add_argument("--idempotency-key", metavar="KEY",
                        help="a repeated submit with this key returns the first message")
    parser.add_argument("--priority", type=int, default=0, help="higher is claimed first")
    args = parser.parse_args(argv)
    try:
        numbers = _recipients(args) or []
        message = NewMessage.validated(content=args.content, recipients=numbers,
                                       scheduled_at=args.at,
                                       idempotency_key=args.idempotency_key,
                                       priority=args.priority)
    except (InvalidRequestError, ConfigError) as exc:
        parser.error(str(exc))
    return _with_store(parser, args, lambda store: _do_submit(store, message))


def _do_submit(store: SqliteStore, message: NewMessage) -> str:
    result = store.submit(message, RealClock().now())
    (view,) = store.messages(message_id=result.message_id)
    if not result.created:
        return (f"already submitted: message {view.id} (idempotency key "
                f"{message.idempotency_key!r}); nothing created")
    return (f"submitted message {view.id}: {sum(view.counts.values())} recipients, "
            f"due {format_utc(view.scheduled_at)}, version {view.version}")


def _edit(prog: str, argv: Sequence[str]) -> int:
    parser = _base_parser(prog, "Change a message that has not started dispatching.")
    parser.add_argument("id", type=int_at_least(1), help="message id")
    parser.add_argument("--version", type=int_at_least(1), required=True,
                        help="the version you last read (see show); a stale one is refused")
    parser.add_argument("--content", help="new text")
    parser.add_argument("--at", type=parse_time, metavar="TIME", help="new ISO-8601 send time")
    _add_recipients(parser)
    args = parser.parse_args(argv)
    try:
        edit = MessageEdit.validated(content=args.content, scheduled_at=args.at,
                                     recipients=_recipients(args))
    except (InvalidRequestError, ConfigError) as exc:
        parser.error(str(exc))

    def body(store: SqliteStore) -> str:
        view = store.edit(args.id, args.version, edit, RealClock().now())
        return f"edited message {view.id}: now version {view.version}"

    return _with_store(parser, args, body, create=False)


def _cancel(prog: str, argv: Sequence[str]) -> int:
    parser = _base_parser(prog, "Cancel a scheduled or dispatching message.")
    parser.add_argument("id", type=int_at_least(1), help="message id")
    args = parser.parse_args(argv)

    def body(store: SqliteStore) -> str:
        result = store.cancel(args.id, RealClock().now())
        return (f"cancelled message {result.message_id} (was {result.was_status}): "
                f"{result.cancelled} deliveries cancelled, {result.already_sent} already sent, "
                f"{result.in_flight} in flight")

    return _with_store(parser, args, body, create=False)


def _show(prog: str, argv: Sequence[str]) -> int:
    parser = _base_parser(prog, "Show one message and its deliveries by status.")
    parser.add_argument("id", type=int_at_least(1), help="message id")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)

    def body(store: SqliteStore) -> str:
        found = store.messages(message_id=args.id)
        if not found:
            raise SmsSimError(f"no message with id {args.id}")
        view = found[0]
        return json.dumps(_as_dict(view)) if args.json else _describe(view)

    return _with_store(parser, args, body, create=False)


def _list(prog: str, argv: Sequence[str]) -> int:
    parser = _base_parser(prog, "List messages, one line each.")
    parser.add_argument("--status", choices=[s.value for s in MessageStatus])
    parser.add_argument("--limit", type=int_at_least(1), default=100)
    args = parser.parse_args(argv)

    def body(store: SqliteStore) -> str:
        status = None if args.status is None else MessageStatus(args.status)
        views = store.messages(status=status, limit=args.limit)
        return "\n".join(_one_line(v) for v in views) if views else "no messages"

    return _with_store(parser, args, body, create=False)


def _dead(prog: str, argv: Sequence[str]) -> int:
    parser = _base_parser(prog, "List dead deliveries (failed on every attempt), or requeue them.")
    parser.add_argument("--message", type=int_at_least(1), metavar="ID", help="only this message")
    parser.add_argument("--requeue", action="store_true",
                        help="put them back to pending with attempts reset")
    parser.add_argument("--limit", type=int_at_least(1), default=1000)
    args = parser.parse_args(argv)

    def body(store: SqliteStore) -> str:
        if args.requeue:
            count = store.requeue_dead(args.message, RealClock().now())
            return f"requeued {count} dead deliveries"
        if args.message is not None and not store.messages(message_id=args.message):
            raise SmsSimError(f"no message with id {args.message}")
        dead = store.deliveries(message_id=args.message, status=DeliveryStatus.DEAD,
                                limit=args.limit)
        if not dead:
            return "no dead deliveries"
        return "\n".join(
            f"delivery {d.id}  message {d.message_id}  {d.recipient}  attempts {d.attempts}  "
            f"last error: {d.last_error}" for d in dead
        )

    return _with_store(parser, args, body, create=False)


def _with_store(parser: argparse.ArgumentParser, args: argparse.Namespace,
                body: Callable[[SqliteStore], str], *, create: bool = True) -> int:
    _configure_logging(args.verbose)
    try:
        store = SqliteStore(args.db, create=create)
        try:
            text = body(store)
        finally:
            store.close()
    except SmsSimError as exc:
        log.debug("command failed", exc_info=True)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    print(text)
    return ExitCode.OK


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(name)s: %(levelname)s: %(message)s", stream=sys.stderr)


def _describe(view: MessageView) -> str:
    counts = ", ".join(f"{status} {view.counts[status]}" for status in DeliveryStatus)
    return "\n".join([
        f"message {view.id}: {view.status}, version {view.version}, priority {view.priority}",
        f"  content: {view.content}",
        f"  scheduled_at {format_utc(view.scheduled_at)}  created_at "
        f"{format_utc(view.created_at)}  updated_at {format_utc(view.updated_at)}",
        f"  dispatch_started_at {format_utc(view.dispatch_started_at)}  completed_at "
        f"{format_utc(view.completed_at)}",
        f"  idempotency_key {view.idempotency_key or '-'}",
        f"  deliveries {sum(view.counts.values())}: {counts}",
    ])


def _one_line(view: MessageView) -> str:
    counts = view.counts
    preview = view.content if len(view.content) <= 40 else view.content[:37] + "..."
    return (f"{view.id}  {view.status}  v{view.version}  due {format_utc(view.scheduled_at)}  "
            f"{sum(counts.values())} recipients: {counts[DeliveryStatus.SENT]} sent, "
            f"{counts[DeliveryStatus.DEAD]} dead  {preview!r}")


def _as_dict(view: MessageView) -> dict[str, object]:
    return {
        "id": view.id, "content": view.content, "status": str(view.status),
        "version": view.version, "priority": view.priority,
        "scheduled_at": view.scheduled_at, "created_at": view.created_at,
        "updated_at": view.updated_at, "dispatch_started_at": view.dispatch_started_at,
        "completed_at": view.completed_at, "idempotency_key": view.idempotency_key,
        "deliveries": {str(k): v for k, v in view.counts.items()},
    }


# --- worker ---------------------------------------------------------------------------------


def _sender_spec(text: str) -> SenderConfig:
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected MEAN,DEV,RATE (got {text!r})")
    try:
        return SenderConfig(non_negative_float(parts[0]), non_negative_float(parts[1]),
                            probability(parts[2]))
    except (argparse.ArgumentTypeError, ConfigError) as exc:
        raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None


def _worker(prog: str, argv: Sequence[str]) -> int:
    parser = _base_parser(prog, "Dispatch due deliveries until SIGINT/SIGTERM: claim batches "
                                "under a lease, send through the simulated sender pool, retry "
                                "with backoff. Several workers may share one database.")
    parser.epilog = ("exit codes: 0 idle exit (--exit-when-idle), 1 store error, 2 bad usage, "
                     "3 threads did not stop, 130 SIGINT, 143 SIGTERM")
    parser.add_argument("--senders", type=int_at_least(0), default=4,
                        help="identical sender threads (default 4)")
    parser.add_argument("--mean", type=non_negative_float, default=0.01, metavar="SECONDS",
                        help="mean send time (default 0.01)")
    parser.add_argument("--deviation", type=non_negative_float, default=0.001, metavar="SECONDS",
                        help="send time is uniform in mean +/- this (default 0.001)")
    parser.add_argument("--failure-rate", type=probability, default=0.0, metavar="P",
                        help="probability a send fails and is retried (default 0)")
    parser.add_argument("--sender", action="append", type=_sender_spec, default=[],
                        metavar="MEAN,DEV,RATE", help="add one sender with its own settings")
    parser.add_argument("--batch", type=int_at_least(1), default=100,
                        help="deliveries per claim (default 100)")
    parser.add_argument("--lease", type=positive_float, default=30.0, metavar="SECONDS",
                        help="claim lease; expired leases are reclaimed by others (default 30)")
    parser.add_argument("--max-attempts", type=int_at_least(1),
                        default=DEFAULT_RETRY.max_attempts, help="attempts before dead (5)")
    parser.add_argument("--retry-base", type=non_negative_float, default=DEFAULT_RETRY.base_s,
                        metavar="SECONDS", help="first retry delay before jitter (default 1)")
    parser.add_argument("--retry-factor", type=positive_float, default=DEFAULT_RETRY.factor,
                        help="backoff growth per retry (default 2)")
    parser.add_argument("--retry-cap", type=non_negative_float, default=DEFAULT_RETRY.cap_s,
                        metavar="SECONDS", help="longest retry delay (default 300)")
    parser.add_argument("--idle-recheck", type=positive_float, default=0.05, metavar="SECONDS",
                        help="longest idle wait before looking for new work (default 0.05)")
    parser.add_argument("--ledger", type=Path, metavar="PATH",
                        help="provider ledger file shared by workers (default: in memory)")
    parser.add_argument("--interval", type=positive_float, default=1.0, metavar="SECONDS",
                        help="seconds between progress lines (default 1)")
    parser.add_argument("--seed", type=int_at_least(0), metavar="N",
                        help="seed for simulated send outcomes and retry jitter (default: random)")
    parser.add_argument("--exit-when-idle", action="store_true",
                        help="exit 0 once nothing is scheduled, pending, leased or retrying")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    parser.add_argument("--unsafe-no-fencing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        # Validated even for --senders 0 so that a typo in --mean is never silently ignored.
        identical = SenderConfig(args.mean, args.deviation, args.failure_rate)
        senders = [identical] * args.senders + list(args.sender)
        if not senders:
            raise ConfigError("senders must be >= 1 (got 0)")
        retry = RetryPolicy(max_attempts=args.max_attempts, base_s=args.retry_base,
                            factor=args.retry_factor, cap_s=args.retry_cap)
        config = DispatchConfig(batch_size=args.batch, lease_s=args.lease,
                                idle_recheck_s=args.idle_recheck, retry=retry,
                                fencing=not args.unsafe_no_fencing)
    except ConfigError as exc:
        parser.error(str(exc))
    _configure_logging(args.verbose)
    seed = new_seed() if args.seed is None else args.seed
    signals = SignalRecorder()
    store: SqliteStore | None = None
    ledger: LedgerProvider | None = None
    try:
        store = SqliteStore(args.db)
        transport: Transport = MemoryProvider()
        if args.ledger is not None:
            ledger = LedgerProvider(args.ledger, clock=RealClock(),
                                    dedup=not args.unsafe_no_fencing)
            transport = ledger
        worker = Worker(store, transport, senders=senders, clock=RealClock(), seed=seed,
                        config=config, output=sys.stdout, interval_s=args.interval,
                        show_progress=not args.quiet, exit_when_idle=args.exit_when_idle)
        print(f"{worker.owner}: dispatching from {args.db} with {len(senders)} senders, "
              f"batch {config.batch_size}, lease {config.lease_s:g}s (seed {seed})", flush=True)
        signals.install()
        report = worker.run(stop_requests=lambda: signals.count)
    except SmsSimError as exc:
        log.debug("worker failed", exc_info=True)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    finally:
        signals.restore()
        if ledger is not None:
            ledger.close()
        if store is not None:
            store.close()
    reason = report.run.stopped_by
    if reason is StopReason.SIGNAL:
        return ExitCode.SIGTERM if signals.first == signal.SIGTERM else ExitCode.SIGINT
    if reason is StopReason.ERROR:
        return ExitCode.ERROR
    if reason is StopReason.OUTPUT_CLOSED:
        return ExitCode.SIGPIPE
    if report.run.threads_alive:
        return ExitCode.SHUTDOWN_TIMEOUT
    return ExitCode.OK


_HANDLERS: dict[str, Callable[[str, Sequence[str]], int]] = {
    "submit": _submit, "edit": _edit, "cancel": _cancel, "show": _show, "list": _list,
    "dead": _dead, "worker": _worker,
}


def main(argv: Sequence[str], *, prog: str) -> int:
    """Run one dispatch command; ``prog`` ends with the command's name (as ``cli`` passes it)."""
    command = prog.rsplit(" ", 1)[-1]
    handler = _HANDLERS.get(command)
    if handler is None:
        print(f"{prog}: error: unknown dispatch command {command!r} "
              f"(choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return ExitCode.USAGE
    return handler(prog, list(argv))
