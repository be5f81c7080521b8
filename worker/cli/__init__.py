"""The `lethe` command line: thin wrappers around the register, the pure core and the store.

Commands live in modules by theme and attach themselves to `main`.
"""

from __future__ import annotations

import gc

import click


class _Lethe(click.Group):
    """Settings read late (the broker's, when a command first reaches the queue) are
    refused as the others are: one line that names the setting, no traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from worker.settings import SettingsError

        # What the imports made (modules, classes, functions: no connection, no file) is
        # set aside from the collector, whose passes over it, and its last one at exit,
        # were a third of a short command. What the command makes is still collected.
        gc.freeze()
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Lethe)
@click.version_option(package_name="lethe")
def main() -> None:
    """Lethe: the processing register enforces its own retention periods."""


# Imported for their side effect: each module adds its commands to `main`.
from worker.cli import ops, paper, pipeline, sweeps  # noqa: E402, F401
