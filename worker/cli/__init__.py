"""The `lethe` command line: thin wrappers around the register, the pure core and the store.

Commands live in modules by theme and attach themselves to `main`.
"""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="lethe")
def main() -> None:
    """Lethe: the processing register enforces its own retention periods."""


# Imported for their side effect: each module adds its commands to `main`.
from worker.cli import ops, paper, pipeline, sweeps  # noqa: E402, F401
