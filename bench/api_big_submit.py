"""Big submit over HTTP: a 100,000-recipient message as JSON and as a CSV upload, through ``serve``.

What is measured, in one run, rotating which format goes first: a fresh database (``init``,
then ``apikey create --tenant bench``) and a fresh ``python -m sms_sim serve --db <tmp>/x.db
--host 127.0.0.1 --port <free> --workers 1`` (no dispatch worker) per submit; then one
``POST /v1/messages`` of N distinct recipients (``--recipients``):

* json: ``application/json``, ``{"content": ..., "recipients": [N numbers]}``;
* csv: ``multipart/form-data`` with a ``content`` field and a ``recipients`` file part
  (``text/csv``, one number per line), the form ``sms_sim/api/submission.py`` reads (the
  file is spooled to disk as it arrives, then read back a line at a time).

The body is built before the clock starts; printed, each the median over the runs:

* recipients/s end to end: N over the seconds from sending the request until its 201 is
  read (the answer must say ``recipient_count`` N);
* the server's peak RSS increase: ``VmHWM`` after the answer minus ``VmRSS`` just before the
  request, from ``/proc/<pid>/status`` of the process that answers (uvicorn's "Started
  server process [pid]" line; with ``--workers 1`` that is ``serve``'s own process, which
  runs uvicorn in itself). ``VmHWM`` is the process's high-water mark since it started,
  so the startup's own peak would count too: it is reset to the current RSS just before the
  request (``echo 5 > /proc/<pid>/clear_refs``), and each submit has a server of its own
  anyway (a second submit in one server would start from the first one's leftovers).

Target (issue 12): peak RSS increase <= 150 MiB for 100,000 recipients, in each format.
The target is judged only at N = 100,000 (SKIP otherwise, as with --quick).

Command (from the repo root): python3 bench/api_big_submit.py [--runs 3]
[--recipients 100000] [--quick]
Under a minute with the defaults; --quick: 10,000 recipients, 1 run (seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from _common import KIB_PER_MIB, command_line, print_header, print_runs, print_target, rotate
from _http import (
    Client,
    create_key,
    expect,
    free_port,
    init_db,
    phone_numbers,
    reset_peak,
    serve_command,
    serving,
    status_kib,
)

TARGET_PEAK_MIB = 150.0
TARGET_RECIPIENTS = 100_000
CONTENT = "bench: a big broadcast"
TENANT = "bench"
BOUNDARY = "sms-sim-bench-boundary-7f3a9c"
SUBMIT_TIMEOUT_S = 600.0

Body = tuple[bytes, str]  # the request body and its Content-Type


def json_body(numbers: Sequence[str]) -> Body:
    return (json.dumps({"content": CONTENT, "recipients": list(numbers)}).encode(),
            "application/json")


def csv_body(numbers: Sequence[str]) -> Body:
    """A multipart form as ``curl -F content=... -F recipients=@list.csv`` sends it."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\n"
            f"{CONTENT}\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; "
            "name=\"recipients\"; filename=\"recipients.csv\"\r\n"
            "Content-Type: text/csv\r\n\r\n")
    csv = "".join(f"{number}\r\n" for number in numbers)
    return ((head + csv + f"\r\n--{BOUNDARY}--\r\n").encode(),
            f"multipart/form-data; boundary={BOUNDARY}")


FORMATS: dict[str, Callable[[Sequence[str]], Body]] = {"json": json_body, "csv": csv_body}


@dataclass(frozen=True, slots=True)
class BigSubmit:
    """One submit: its end-to-end seconds, the server's RSS before it and the increase of
    its peak over that (MiB), and whether the peak was reset before it."""

    seconds: float
    rss_before_mib: float
    peak_increase_mib: float
    peak_was_reset: bool


def submit_once(body: Body, recipients: int) -> BigSubmit:
    """Fresh database and server; one big submit; the server stopped and the files gone."""
    with tempfile.TemporaryDirectory(prefix="sms_sim-api-big-") as tmp:
        db = Path(tmp) / "x.db"
        init_db(db)
        token = create_key(db, TENANT)
        port = free_port()
        with serving(serve_command(db, port, workers=1), port, Path(tmp) / "serve.log") \
                as server:
            pids = server.handler_pids()
            if len(pids) != 1:
                raise RuntimeError(f"expected one server process, found {pids}")
            pid = pids[0]
            with Client(port, token=token, timeout_s=SUBMIT_TIMEOUT_S) as client:
                rss_before_kib = status_kib(pid, "VmRSS")
                was_reset = reset_peak(pid)
                start = time.perf_counter()
                reply = client.request("POST", "/v1/messages", body[0],
                                       {"Content-Type": body[1]})
                seconds = time.perf_counter() - start
                peak_kib = status_kib(pid, "VmHWM")
            answer = expect(reply, 201, "big submit").json()
            if answer.get("recipient_count") != recipients:
                raise RuntimeError(f"the answer says recipient_count "
                                   f"{answer.get('recipient_count')}, not {recipients}")
    return BigSubmit(seconds=seconds, rss_before_mib=rss_before_kib / KIB_PER_MIB,
                     peak_increase_mib=(peak_kib - rss_before_kib) / KIB_PER_MIB,
                     peak_was_reset=was_reset)


def _report(name: str, body_bytes: int, recipients: int, results: list[BigSubmit]) -> bool:
    print_header(f"{name} ({body_bytes / 2**20:.1f} MiB body)", len(results))
    print_runs("recipients/s end to end", [recipients / r.seconds for r in results], ",.0f")
    print_runs("seconds end to end", [r.seconds for r in results], ".2f")
    print_runs("server RSS before MiB", [r.rss_before_mib for r in results], ".1f")
    increase = print_runs("server peak RSS increase MiB",
                          [r.peak_increase_mib for r in results], ".1f")
    passed = increase <= TARGET_PEAK_MIB
    label = f"target peak RSS increase <= {TARGET_PEAK_MIB:g} MiB for {TARGET_RECIPIENTS:,}"
    if recipients != TARGET_RECIPIENTS:
        print_target(label, None, f"{increase:.1f} MiB for {recipients:,}: not the target's "
                                  "size")
        return True
    print_target(label, passed, f"{increase:.1f} MiB")
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=None,
                        help="submits per format (default 3; 1 with --quick)")
    parser.add_argument("--recipients", type=int, default=TARGET_RECIPIENTS,
                        help=f"recipients of the message (default {TARGET_RECIPIENTS:,})")
    parser.add_argument("--quick", action="store_true", help="10,000 recipients, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.recipients = 10_000
    runs: int = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1 or args.recipients < 1:
        parser.error("--runs and --recipients must be >= 1")
    numbers = phone_numbers(args.recipients)
    bodies = {name: build(numbers) for name, build in FORMATS.items()}
    del numbers
    print(__doc__.splitlines()[0] if __doc__ else "")
    print(f"{args.recipients:,} recipients; serve --workers 1, a fresh server and database per "
          "submit")
    print(f"command: {command_line()}")
    results = rotate({name: partial(submit_once, body, args.recipients)
                      for name, body in bodies.items()}, runs)
    every = [r for found in results.values() for r in found]
    if not all(r.peak_was_reset for r in every):
        print("note: VmHWM could not be reset (clear_refs refused), so the increase counts "
              "from the server's startup peak where that was higher")
    verdicts = [_report(name, len(bodies[name][0]), args.recipients, results[name])
                for name in FORMATS]
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
