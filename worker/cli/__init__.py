"""The `lethe` command line: thin wrappers around the register, the pure core and the store.

Commands live in modules by theme and attach themselves to `main`.
"""

from __future__ import annotations

# Imported for their side effect: each module adds its commands to `main`.
from worker.cli import history, intake, ops, outbox, paper, pipeline, sweeps  # noqa: E402, F401
from worker.cli.group import main

__all__ = ["main"]
