#!/usr/bin/env bash
# mypy --strict and flake8 (with bugbear) over the package, tests, bench and start.py.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${SMS_SIM_PYTHON:-$root/.venv/bin/python}
"$py" -m mypy
"$py" -m flake8 sms_sim tests bench start.py
echo "lint: mypy and flake8 clean" >&2
