#!/usr/bin/env bash
# Builds .venv from static_requirements.txt when it is missing or stale.
# "Stale" means the pinned file changed since the venv was built: a stamp inside .venv
# records the hash of the file it was built from. Safe to run repeatedly.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.sms_sim-requirements.sha256"
want=$(sha256sum "$root/static_requirements.txt" | cut -d' ' -f1)
python=${PYTHON:-python3}

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "create_venv: building $venv from static_requirements.txt" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "$root/static_requirements.txt"
echo "$want" > "$stamp"
