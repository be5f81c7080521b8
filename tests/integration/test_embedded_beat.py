"""The beat process `lethe worker` forks on the embedded default ends with its worker:
a worker killed with SIGKILL leaves no orphan beat ticking, and none that keeps the
next worker out of its home."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from harness import Lethe, wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    # A zombie has ended; only its exit status waits for whoever adopted it.
    return None if state == "Z" else (state, int(ppid))


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] == pid:
            found.append(int(entry.name))
    return found


def _beat_of(worker: subprocess.Popen) -> int:
    """The embedded worker runs the solo pool: its one child is beat."""
    wait_for(lambda: len(_children(worker.pid)) == 1, 30, "the worker's beat process")
    return _children(worker.pid)[0]


def _gone(pid: int) -> bool:
    return _stat(pid) is None


@contextmanager
def _reaped(pids: list[int]) -> Iterator[None]:
    """Whatever the outcome, no beat of ours is left behind (stopped or orphaned)."""
    try:
        yield
    finally:
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_killed_with_sigkill_takes_its_beat_with_it_and_a_new_one_starts(
    embedded: Lethe,
):
    worker = embedded.start_worker()
    beat = _beat_of(worker)
    with _reaped([beat]):
        os.kill(worker.pid, signal.SIGKILL)  # the worker alone, not its process group
        worker.wait(timeout=30)
        wait_for(lambda: _gone(beat), 5, f"the orphaned beat process {beat} to end")

        again = embedded.start_worker()
        assert not _gone(_beat_of(again))


def test_a_beat_that_has_not_ended_yet_does_not_keep_the_next_worker_out(embedded: Lethe):
    worker = embedded.start_worker()
    beat = _beat_of(worker)
    with _reaped([beat]):
        # Stopped, the old beat cannot act on its parent's death until it runs again.
        os.kill(beat, signal.SIGSTOP)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)

        # It holds no lock on the home: the next worker starts beside it.
        again = embedded.start_worker()
        assert not _gone(beat)

        os.kill(beat, signal.SIGCONT)
        wait_for(lambda: _gone(beat), 5, f"the stale beat process {beat} to end")
        assert not _gone(_beat_of(again))


# A parent that starts a child watching it by polling (the fallback where Linux's
# prctl is missing), prints the child's pid once it watches, and waits.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE)
assert child.stdout.readline() == b"watching\\n"
print(child.pid, flush=True)
time.sleep(600)
"""
CHILD = """
import os, sys, threading, time
from worker.brokers.orphans import poll_parent
threading.Thread(target=poll_parent, args=(os.getppid(),), daemon=True).start()
print("watching", flush=True)
time.sleep(600)
"""


def test_without_prctl_a_child_polling_its_parent_ends_when_the_parent_is_killed():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        child = int(parent.stdout.readline())
    except ValueError:
        parent.kill()
        raise AssertionError("the child never started watching its parent") from None
    with _reaped([child]):
        assert not _gone(child)
        parent.kill()
        parent.wait(timeout=30)
        wait_for(lambda: _gone(child), 5, f"the orphaned child {child} to end")
