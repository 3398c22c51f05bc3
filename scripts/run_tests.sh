#!/usr/bin/env bash
# The one test command: builds .venv if missing or stale, then lint, installs Chromium for
# the browser tests if missing, then the whole suite.
# Runnable directly (bash scripts/run_tests.sh) or sourced (. scripts/run_tests.sh); when
# sourced it returns instead of exiting, so it never closes your shell. Extra arguments go to pytest.
_sms_sim_run_tests() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  bash "$root/scripts/create_venv.sh" || return $?
  bash "$root/scripts/lint.sh" || return $?
  bash "$root/scripts/ensure_chromium.sh" || return $?  # the browser tests need it
  (cd "$root" && "$root/.venv/bin/python" -m pytest "$@")
}
_sms_sim_run_tests "$@"
_sms_sim_rc=$?
unset -f _sms_sim_run_tests
# shellcheck disable=SC2317  # 'return' works when sourced, 'exit' when run
return "$_sms_sim_rc" 2>/dev/null || exit "$_sms_sim_rc"
