#!/usr/bin/env bash
# Resolves requirements.txt into exact versions and writes static_requirements.txt.
# Run it when you add or upgrade a dev tool; commit both files together.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/requirements.txt"
"$tmp/venv/bin/python" -m pip freeze --all | grep -v -E '^(pip|setuptools|wheel)==' \
  > "$root/static_requirements.txt"
echo "pin_reqs: wrote $root/static_requirements.txt" >&2
