"""How many sender threads this host can be asked to start.

The threaded mode runs one OS thread per sender, so its ceiling is lower than the virtual
mode's ``SENDERS_MAX`` and depends on the host: the per-user process limit
(``RLIMIT_NPROC``, which counts threads), the kernel's ``threads-max`` and a cgroup's
``pids.max``. Read when asked (never at import), so a test or a container sees its own.
Past ``THREADED_SENDERS_MAX`` a run could not keep real time anyway (``bench/fidelity.py``:
1,000 senders already lag), so the cap is a refusal of a run that would mislead, not only
of one that would crash. Even under the cap the OS may refuse a thread; ``ThreadGroup``
turns that into a ``ThreadStartError``.
"""

from __future__ import annotations

import resource
from pathlib import Path

from sms_sim.config import SENDERS_MAX
from sms_sim.errors import ConfigError

__all__ = ["THREADED_SENDERS_MAX", "threaded_senders_max", "ThreadStartError"]

THREADED_SENDERS_MAX = 10_000
# Only half of a host-wide limit is ours to take: other processes of the user (and the
# interpreter's own threads) count against the same limit.
_HOST_SHARE = 2
_LIMIT_FILES = (
    Path("/proc/sys/kernel/threads-max"),
    Path("/sys/fs/cgroup/pids.max"),  # cgroup v2
    Path("/sys/fs/cgroup/pids/pids.max"),  # cgroup v1
)


class ThreadStartError(ConfigError):
    """The OS refused to start a thread: the run asked for more senders than this host can
    run. A ``ConfigError`` because the remedy is a smaller count."""


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None  # "max" means no limit


def host_thread_limit() -> int | None:
    """The smallest of the host's limits on threads this process may start, or None."""
    limits = [limit for limit in map(_read_limit, _LIMIT_FILES) if limit is not None]
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    return min(limits) if limits else None


def threaded_senders_max() -> int:
    """The most senders the threaded mode accepts on this host (at least 1)."""
    host = host_thread_limit()
    ceiling = min(THREADED_SENDERS_MAX, SENDERS_MAX)
    return ceiling if host is None else max(1, min(ceiling, host // _HOST_SHARE))
