"""``python -m sms_sim``: the same CLI as start.py and the sms-sim console script."""

import sys

try:
    from sms_sim.cli import main
except KeyboardInterrupt:  # Ctrl-C while the program was still loading: no traceback
    print("python3 -m sms_sim: stopped by SIGINT", file=sys.stderr)
    sys.exit(130)

sys.exit(main(prog="python3 -m sms_sim"))
