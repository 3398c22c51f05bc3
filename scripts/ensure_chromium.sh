#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver when either binary is missing, so the
# browser tests (tests/api/test_browser.py) have a real headless browser. Non-interactive;
# as root directly, otherwise through sudo. Prints one line either way. Safe to repeat.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "ensure_chromium: chromium and chromedriver present" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  echo "ensure_chromium: chromium missing and not root (no sudo): install chromium and chromium-driver" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q \
       && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
  echo "ensure_chromium: apt-get failed: $(tail -n 1 "$log")" >&2
  exit 1
fi
echo "ensure_chromium: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)" >&2
