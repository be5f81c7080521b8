"""A forked process that must not outlive the process that forked it.

`lethe worker` (and `celery worker --beat`) runs beat in a process Celery forks
from the worker. A worker killed with SIGKILL cannot stop it: the beat process
would live on as an orphan, keep sending sweep ticks and keep using the schedule
file, and the next `lethe worker` on the same home would start a second beat.

On Linux the kernel is asked to signal the child when its parent dies
(prctl PR_SET_PDEATHSIG): it happens at the parent's death, whatever the child is
doing, with no thread in the child. Elsewhere (macOS, the BSDs have no prctl) a
daemon thread polls os.getppid(), which changes when the orphan is re-parented.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

# <linux/prctl.h>
_PR_SET_PDEATHSIG = 1

# How often the fallback looks at its parent: the orphan ends within this long.
POLL_SECONDS = 0.5


def end_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> str:
    """Send `sig` to this process once `parent_pid`, its parent, has died.

    Returns how it is watched: "prctl" (the kernel) or "poll" (a daemon thread).
    """
    how = "prctl" if _ask_kernel(sig) else "poll"
    if how == "poll":
        threading.Thread(
            target=poll_parent, args=(parent_pid, sig), name="end-with-parent", daemon=True
        ).start()
    # A parent that died between the fork and this call sends nothing any more.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
    return how


def poll_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Block until this process is no longer `parent_pid`'s child, then send it `sig`."""
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), sig)


def _ask_kernel(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        # The signal goes out when the *thread* that forked exits: Celery forks beat
        # from the worker's main thread, which lives as long as the worker.
        unused = ctypes.c_ulong(0)
        return libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig), unused, unused, unused) == 0
    except (OSError, AttributeError):
        return False
