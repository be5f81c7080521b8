"""The demo's worker: a real `lethe worker` process of its own, started on the demo's
settings and stopped with it (also when the terminal hangs up)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click


class DemoError(click.ClickException):
    """The demo cannot run here; the message says what to change."""


def start_worker(settings: Any, home: Path) -> subprocess.Popen:
    from worker.app import events_queue

    bin_dir = Path(sys.executable).parent
    if settings.embedded:
        command = [str(bin_dir / "lethe"), "worker"]
    else:
        command = [
            str(bin_dir / "celery"),
            "-A",
            "worker.app",
            "worker",
            "--loglevel=INFO",
            "-Q",
            events_queue(settings),
        ]
    log = home / "worker.log"
    handle = log.open("w")
    process = subprocess.Popen(
        command,
        env=dict(os.environ),
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DemoError(f"the worker stopped at start; see {log}")
            if "ready" in log.read_text(errors="replace"):
                return process
            time.sleep(0.1)
        raise DemoError(f"the worker did not start within 60 s; see {log}")
    except BaseException:
        # a SIGTERM while waiting too: the caller's `finally` does not hold it yet
        stop(process)
        raise


def stop_on_hangup() -> None:
    # The worker runs in its own session (Ctrl-C must reach the demo first): a
    # terminal closed or a `kill` must still stop it through the `finally` above.
    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, leave)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the replay -----------------------------------------------------------------------------
