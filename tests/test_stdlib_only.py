"""The package and its CLI import nothing outside the standard library."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Real threads, processes or wall-clock waits (STYLE.md section 10).
pytestmark = pytest.mark.slow

PROBE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'psycopg', 'fastapi', 'matplotlib', 'hypothesis', 'pytest'}:
            raise ImportError('blocked: ' + name)
        return None
sys.meta_path.insert(0, Block())
import sms_sim, sms_sim.cli.simulate, sms_sim.sim.threaded.run
outside = sorted(
    name for name in sys.modules
    if name.split('.')[0] not in sys.stdlib_module_names
    and name.split('.')[0] not in {'sms_sim', '__main__'}
)
print(','.join(outside))
"""


def test_import_needs_only_the_standard_library() -> None:
    # -S: no site-packages at all, so a third-party import would fail outright.
    result = subprocess.run([sys.executable, "-S", "-c", PROBE], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_start_py_runs_without_site_packages() -> None:
    result = subprocess.run([sys.executable, "-S", "start.py", "30", "2", "0", "0", "0.5"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "completed: 30 produced" in result.stdout
