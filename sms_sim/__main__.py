"""``python -m sms_sim``: the same CLI as start.py and the sms-sim console script."""

import sys

from sms_sim.cli import main

sys.exit(main(prog="python3 -m sms_sim"))
