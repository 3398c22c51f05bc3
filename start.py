#!/usr/bin/env python3
"""Run the SMS simulator: ``python3 start.py 10000 4 0.01 0.001 0.2`` (see ``--help``)."""

import sys

from sms_sim.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="start.py"))
