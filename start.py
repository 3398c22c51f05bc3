#!/usr/bin/env python3
"""Run the SMS simulator: ``python3 start.py 10000 4 0.01 0.001 0.2`` (see ``--help``)."""

import sys

try:
    from sms_sim.cli import main
except KeyboardInterrupt:  # Ctrl-C while the program was still loading: no traceback
    print("start.py: stopped by SIGINT", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main(prog="start.py"))
